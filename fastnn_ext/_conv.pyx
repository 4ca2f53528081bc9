"""2-D convolution: direct loops or im2col + BLAS. Mirrors fastnn/backends/numpy/conv.py.

Two ways to compute the same thing; the adapter (fastnn/backends/cython/conv.py) picks:

* direct: few input channels (the 1-channel first layer of an MNIST net). The
  im2col matrix would be C*KH*KW times the input for a GEMM with a tiny inner
  dimension; looping over the filter taps instead keeps everything in cache. (Off by
  default: see DIRECT_MAX_CHANNELS in the adapter for why.)
* im2col + GEMM: the columns are laid out transposed, colT (C*KH*KW + 1, N*OH*OW), so
  that im2col/col2im copy whole contiguous rows, with a row of ones that folds the bias
  into the product; one GEMM per image, ``y[n] = [W2 | b] @ colT[:, n]``, writes NCHW
  directly. (One GEMM for the whole batch, then a transpose, measured slower: about
  8 ms against 2.4 ms for simple-cnn's first layer at 2 threads.)

``im2col`` / ``col2im`` themselves use the reference's layout, (N*OH*OW, C*KH*KW).
Every loop over images runs in an OpenMP ``prange``; BLAS is only called outside them.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastnn_ext._common cimport gemm, tap_range, threads_for, vsum


# ------------------------------------------------------------- im2col / col2im (reference layout)

cdef void _im2col_image(floating[:, ::1] col, const floating[:, :, :, ::1] x, Py_ssize_t n,
                        int kh, int kw, int stride, int pad, int OH, int OW) noexcept nogil:
    cdef int C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int oh, ow, c, i, j, h, w
    cdef Py_ssize_t row
    # col[(n, oh, ow), (c, i, j)] = x_padded[n, c, oh*stride + i, ow*stride + j]
    for oh in range(OH):
        for ow in range(OW):
            row = (n * OH + oh) * OW + ow
            for c in range(C):
                for i in range(kh):
                    h = oh * stride + i - pad
                    for j in range(kw):
                        w = ow * stride + j - pad
                        if 0 <= h < H and 0 <= w < W:
                            col[row, (c * kh + i) * kw + j] = x[n, c, h, w]
                        else:
                            col[row, (c * kh + i) * kw + j] = 0


def im2col(floating[:, ::1] col, const floating[:, :, :, ::1] x, int kh, int kw, int stride,
           int pad):
    # x (N, C, H, W) -> col (N*OH*OW, C*KH*KW), rows ordered (n, oh, ow), columns (c, i, j)
    cdef Py_ssize_t N = x.shape[0], n
    cdef int OH = (x.shape[2] + 2 * pad - kh) // stride + 1
    cdef int OW = (x.shape[3] + 2 * pad - kw) // stride + 1
    for n in prange(N, nogil=True, num_threads=threads_for(col.shape[0] * col.shape[1]),
                    schedule="static"):
        _im2col_image(col, x, n, kh, kw, stride, pad, OH, OW)


cdef void _col2im_image(floating[:, :, :, ::1] dx, const floating[:, ::1] col, Py_ssize_t n,
                        int kh, int kw, int stride, int pad, int OH, int OW) noexcept nogil:
    cdef int C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef int oh, ow, c, i, j, h, w
    cdef Py_ssize_t row
    for c in range(C):
        for h in range(H):
            for w in range(W):
                dx[n, c, h, w] = 0
    # dx_padded[n, c, oh*stride + i, ow*stride + j] += col[(n, oh, ow), (c, i, j)]
    for oh in range(OH):
        for ow in range(OW):
            row = (n * OH + oh) * OW + ow
            for c in range(C):
                for i in range(kh):
                    h = oh * stride + i - pad
                    if h < 0 or h >= H:
                        continue
                    for j in range(kw):
                        w = ow * stride + j - pad
                        if 0 <= w < W:
                            dx[n, c, h, w] += col[row, (c * kh + i) * kw + j]


def col2im(floating[:, :, :, ::1] dx, const floating[:, ::1] col, int kh, int kw, int stride,
           int pad):
    # col (N*OH*OW, C*KH*KW) -> dx (N, C, H, W), overlapping windows summed
    cdef Py_ssize_t N = dx.shape[0], n
    cdef int OH = (dx.shape[2] + 2 * pad - kh) // stride + 1
    cdef int OW = (dx.shape[3] + 2 * pad - kw) // stride + 1
    for n in prange(N, nogil=True, num_threads=threads_for(col.shape[0] * col.shape[1]),
                    schedule="static"):
        _col2im_image(dx, col, n, kh, kw, stride, pad, OH, OW)


# ------------------------------------------------------------------------- direct convolution

cdef void _direct_forward_image(floating[:, :, :, ::1] y, const floating[:, :, :, ::1] x,
                                const floating[:, :, :, ::1] Wt, const floating[::1] b,
                                Py_ssize_t n, int stride, int pad) noexcept nogil:
    cdef int F = Wt.shape[0], C = Wt.shape[1], KH = Wt.shape[2], KW = Wt.shape[3]
    cdef int H = x.shape[2], W = x.shape[3], OH = y.shape[2], OW = y.shape[3]
    cdef int f, c, i, j, oh, ow, h, lo, hi
    cdef floating w
    for f in range(F):
        for oh in range(OH):
            # y[n, f, oh, :] = b[f] + sum over taps of W[f, c, i, j] * x_padded[n, c, oh*s + i, j::s]
            for ow in range(OW):
                y[n, f, oh, ow] = b[f]
            for c in range(C):
                for i in range(KH):
                    h = oh * stride + i - pad
                    if h < 0 or h >= H:
                        continue
                    for j in range(KW):
                        tap_range(W, OW, j, stride, pad, &lo, &hi)
                        w = Wt[f, c, i, j]
                        for ow in range(lo, hi):
                            y[n, f, oh, ow] += w * x[n, c, h, ow * stride + j - pad]


def conv2d_forward_direct(floating[:, :, :, ::1] y, const floating[:, :, :, ::1] x,
                          const floating[:, :, :, ::1] W, const floating[::1] b, int stride,
                          int pad):
    # x (N, C, H, W), W (F, C, KH, KW), b (F,) -> y (N, F, OH, OW)
    cdef Py_ssize_t N = x.shape[0], n
    for n in prange(N, nogil=True, num_threads=threads_for(y.shape[0] * y.shape[1] * y.shape[2]
                                                           * y.shape[3] * W.shape[1] * W.shape[2]
                                                           * W.shape[3] // 8),
                    schedule="static"):
        _direct_forward_image(y, x, W, b, n, stride, pad)


cdef void _direct_weight_grad_filter(floating[:, :, ::1] acc, const floating[:, :, :, ::1] dy,
                                     const floating[:, :, :, ::1] x, Py_ssize_t f, int KH, int KW,
                                     int stride, int pad) noexcept nogil:
    # acc[f, tap, :] collects the products lane by lane (ow), so the adds vectorise;
    # acc[f, C*KH*KW, :] collects dy itself, for db.
    cdef int N = dy.shape[0], OH = dy.shape[2], OW = dy.shape[3]
    cdef int C = x.shape[1], H = x.shape[2], W = x.shape[3], taps = C * KH * KW
    cdef int n, c, i, j, oh, ow, h, lo, hi, t
    for t in range(taps + 1):
        for ow in range(OW):
            acc[f, t, ow] = 0
    for n in range(N):
        for oh in range(OH):
            for ow in range(OW):
                acc[f, taps, ow] += dy[n, f, oh, ow]
            for c in range(C):
                for i in range(KH):
                    h = oh * stride + i - pad
                    if h < 0 or h >= H:
                        continue
                    for j in range(KW):
                        tap_range(W, OW, j, stride, pad, &lo, &hi)
                        t = (c * KH + i) * KW + j
                        for ow in range(lo, hi):
                            acc[f, t, ow] += dy[n, f, oh, ow] * x[n, c, h, ow * stride + j - pad]


def conv2d_weight_grad_direct(floating[:, :, :, ::1] dW, floating[::1] db,
                              floating[:, :, ::1] acc, const floating[:, :, :, ::1] dy,
                              const floating[:, :, :, ::1] x, int stride, int pad):
    # dy (N, F, OH, OW), x (N, C, H, W) -> dW (F, C, KH, KW), db (F,);
    # acc (F, C*KH*KW + 1, OW) is scratch
    cdef Py_ssize_t F = dW.shape[0], f
    cdef int C = dW.shape[1], KH = dW.shape[2], KW = dW.shape[3], OW = dy.shape[3]
    cdef int c, i, j
    # dW[f, c, i, j] = sum over n, oh, ow of dy[n, f, oh, ow] * x_padded[n, c, oh*s + i, ow*s + j]
    # db[f] = dy[:, f].sum()
    for f in prange(F, nogil=True, num_threads=threads_for(dy.shape[0] * dy.shape[1] * dy.shape[2]
                                                           * dy.shape[3] * (acc.shape[1]) // 8),
                    schedule="static"):
        _direct_weight_grad_filter(acc, dy, x, f, KH, KW, stride, pad)
    with nogil:
        for f in range(F):
            for c in range(C):
                for i in range(KH):
                    for j in range(KW):
                        dW[f, c, i, j] = vsum(&acc[f, (c * KH + i) * KW + j, 0], OW)
            db[f] = vsum(&acc[f, C * KH * KW, 0], OW)


cdef void _direct_input_grad_image(floating[:, :, :, ::1] dx, const floating[:, :, :, ::1] dy,
                                   const floating[:, :, :, ::1] Wt, Py_ssize_t n, int stride,
                                   int pad) noexcept nogil:
    cdef int F = Wt.shape[0], C = Wt.shape[1], KH = Wt.shape[2], KW = Wt.shape[3]
    cdef int H = dx.shape[2], W = dx.shape[3], OH = dy.shape[2], OW = dy.shape[3]
    cdef int f, c, i, j, oh, ow, h, w, lo, hi
    cdef floating wt
    for c in range(C):
        for h in range(H):
            for w in range(W):
                dx[n, c, h, w] = 0
    # dx_padded[n, c, oh*s + i, ow*s + j] += W[f, c, i, j] * dy[n, f, oh, ow]
    for f in range(F):
        for oh in range(OH):
            for c in range(C):
                for i in range(KH):
                    h = oh * stride + i - pad
                    if h < 0 or h >= H:
                        continue
                    for j in range(KW):
                        tap_range(W, OW, j, stride, pad, &lo, &hi)
                        wt = Wt[f, c, i, j]
                        for ow in range(lo, hi):
                            dx[n, c, h, ow * stride + j - pad] += wt * dy[n, f, oh, ow]


def conv2d_input_grad_direct(floating[:, :, :, ::1] dx, const floating[:, :, :, ::1] dy,
                             const floating[:, :, :, ::1] W, int stride, int pad):
    # dy (N, F, OH, OW), W (F, C, KH, KW) -> dx (N, C, H, W)
    cdef Py_ssize_t N = dx.shape[0], n
    for n in prange(N, nogil=True, num_threads=threads_for(dy.shape[0] * dy.shape[1] * dy.shape[2]
                                                           * dy.shape[3] * W.shape[1] * W.shape[2]
                                                           * W.shape[3] // 8),
                    schedule="static"):
        _direct_input_grad_image(dx, dy, W, n, stride, pad)


# ------------------------------------------------------------ im2col + GEMM (transposed columns)

cdef void _im2col_t_image(floating[:, ::1] colT, const floating[:, :, :, ::1] x, Py_ssize_t n,
                          int kh, int kw, int stride, int pad, int OH, int OW) noexcept nogil:
    cdef int C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int c, i, j, oh, ow, h, lo, hi
    cdef Py_ssize_t row, base
    # colT[(c, i, j), (n, oh, ow)] = x_padded[n, c, oh*stride + i, ow*stride + j]
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                tap_range(W, OW, j, stride, pad, &lo, &hi)
                for oh in range(OH):
                    base = (n * OH + oh) * OW
                    h = oh * stride + i - pad
                    if h < 0 or h >= H:
                        for ow in range(OW):
                            colT[row, base + ow] = 0
                        continue
                    for ow in range(lo):
                        colT[row, base + ow] = 0
                    for ow in range(lo, hi):
                        colT[row, base + ow] = x[n, c, h, ow * stride + j - pad]
                    for ow in range(hi, OW):
                        colT[row, base + ow] = 0


cdef void _col2im_t_image(floating[:, :, :, ::1] dx, const floating[:, ::1] dcolT, Py_ssize_t n,
                          int kh, int kw, int stride, int pad, int OH, int OW) noexcept nogil:
    cdef int C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef int c, i, j, oh, ow, h, w, lo, hi
    cdef Py_ssize_t row, base
    for c in range(C):
        for h in range(H):
            for w in range(W):
                dx[n, c, h, w] = 0
        # dx_padded[n, c, oh*stride + i, ow*stride + j] += dcolT[(c, i, j), (n, oh, ow)]
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                tap_range(W, OW, j, stride, pad, &lo, &hi)
                for oh in range(OH):
                    h = oh * stride + i - pad
                    if h < 0 or h >= H:
                        continue
                    base = (n * OH + oh) * OW
                    for ow in range(lo, hi):
                        dx[n, c, h, ow * stride + j - pad] += dcolT[row, base + ow]


# ------------------------------------------- im2col + one GEMM per image, bias folded in

def conv2d_forward_images(floating[:, :, ::1] y, floating[:, ::1] colT, floating[:, ::1] W_ext,
                          const floating[:, :, :, ::1] x, const floating[:, ::1] W2,
                          const floating[::1] b, int kh, int kw, int stride, int pad):
    # x (N, C, H, W), W2 (F, K), b (F,) -> y (N, F, OH*OW), K = C*KH*KW;
    # colT (K + 1, N*OH*OW) is kept for the backward pass, its last row all ones, so that
    # W_ext = [W2 | b] (F, K + 1, scratch) adds the bias inside the GEMM
    cdef Py_ssize_t N = x.shape[0], F = W2.shape[0], P = y.shape[2], n, f, k, p
    cdef int K = W2.shape[1], NP = <int> (N * P)
    cdef int OH = (x.shape[2] + 2 * pad - kh) // stride + 1
    cdef int OW = (x.shape[3] + 2 * pad - kw) // stride + 1
    if N == 0 or F == 0 or P == 0:
        return
    with nogil:
        # W_ext = np.hstack([W2, b[:, None]])
        for f in range(F):
            for k in range(K):
                W_ext[f, k] = W2[f, k]
            W_ext[f, K] = b[f]
        # colT[:K] = im2col(x).T; colT[K] = 1
        for n in prange(N, num_threads=threads_for(colT.shape[0] * colT.shape[1]),
                        schedule="static"):
            _im2col_t_image(colT, x, n, kh, kw, stride, pad, OH, OW)
            for p in range(P):
                colT[K, n * P + p] = 1
        # y[n] = W_ext @ colT[:, n*P:(n+1)*P]   (lands in NCHW: no transpose; BLAS outside prange)
        for n in range(N):
            gemm(False, False, <int> F, <int> P, K + 1, 1, &W_ext[0, 0], K + 1,
                 &colT[0, n * P], NP, 0, &y[n, 0, 0], <int> P)


def conv2d_weight_grad_images(floating[:, ::1] dW2, floating[::1] db, floating[:, ::1] dW_ext,
                              const floating[:, :, ::1] dy, const floating[:, ::1] colT):
    # dy (N, F, OH*OW), colT (K + 1, N*OH*OW) -> dW2 (F, K), db (F,); dW_ext (F, K + 1) scratch
    cdef Py_ssize_t N = dy.shape[0], F = dy.shape[1], P = dy.shape[2], n, f, k
    cdef int K = dW2.shape[1], NP = <int> colT.shape[1]
    with nogil:
        # dW_ext = sum over n of dy[n] @ colT[:, n*P:(n+1)*P].T   (its last column is db)
        for n in range(N):
            gemm(False, True, <int> F, K + 1, <int> P, 1, &dy[n, 0, 0], <int> P,
                 &colT[0, n * P], NP, 0 if n == 0 else 1, &dW_ext[0, 0], K + 1)
        for f in range(F):
            for k in range(K):
                dW2[f, k] = dW_ext[f, k]
            db[f] = dW_ext[f, K] if N > 0 else 0


def conv2d_input_grad_images(floating[:, :, :, ::1] dx, floating[:, ::1] dcolT,
                             const floating[:, :, ::1] dy, const floating[:, ::1] W2, int kh,
                             int kw, int stride, int pad):
    # dy (N, F, OH*OW), W2 (F, K) -> dx (N, C, H, W); dcolT (K, N*OH*OW) is scratch
    cdef Py_ssize_t N = dy.shape[0], F = dy.shape[1], P = dy.shape[2], n
    cdef int K = W2.shape[1], NP = <int> dcolT.shape[1]
    cdef int OH = (dx.shape[2] + 2 * pad - kh) // stride + 1
    cdef int OW = (dx.shape[3] + 2 * pad - kw) // stride + 1
    with nogil:
        # dcolT[:, n*P:(n+1)*P] = W2.T @ dy[n]
        for n in range(N):
            gemm(True, False, K, <int> P, <int> F, 1, &W2[0, 0], K, &dy[n, 0, 0], <int> P,
                 0, &dcolT[0, n * P], NP)
        # dx = col2im(dcolT.T)
        for n in prange(N, num_threads=threads_for(dcolT.shape[0] * dcolT.shape[1]),
                        schedule="static"):
            _col2im_t_image(dx, dcolT, n, kh, kw, stride, pad, OH, OW)
