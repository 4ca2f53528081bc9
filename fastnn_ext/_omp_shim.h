/* OpenMP where the compiler has it, one thread where it does not.

   Cython's `cimport openmp` includes <omp.h> unconditionally, so a module that asks OpenMP for
   its thread limit does not compile without OpenMP: the serial build, which setup.py falls back to
   (or is told to make with FASTNN_OPENMP=0), would fail. The modules declare the one OpenMP
   function they call from this header instead (fastnn_ext/_common.pxd): the real one under OpenMP
   (-fopenmp defines _OPENMP), a stand-in that says "one thread" otherwise. prange needs nothing
   here: without OpenMP its pragmas are ignored and the loop runs serially, in order. */
#ifndef FASTNN_OMP_SHIM_H
#define FASTNN_OMP_SHIM_H

#ifdef _OPENMP
#include <omp.h>
#define FASTNN_OPENMP 1
#else
#define FASTNN_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
#endif

#endif
