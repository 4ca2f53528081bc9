"""Learning-rate schedules, stepped once per optimizer step, with PyTorch's formulas and names.

    schedule = schedules.make("onecycle")            # or "constant", "step", "cosine"
    lr = schedule.lr(step, total_steps, steps_per_epoch, base_lr)

``step`` counts optimizer steps from 0 (the step about to run), ``total_steps`` is the run's
length, and ``base_lr`` the optimizer's configured rate: the peak for one-cycle, the start for the
others. A schedule is a pure function of these numbers, so a resumed run, which knows its step,
gets exactly the rates an uninterrupted run would have had; the Trainer sets them before each step.

=========  ==============================================  ===================================
name       rate at step t of T                             PyTorch
=========  ==============================================  ===================================
constant   base                                            (no scheduler)
step       base * gamma ** (t // step_size)                StepLR (step_size: one epoch)
cosine     eta_min + (base - eta_min) (1 + cos(pi t/T))/2  CosineAnnealingLR(T_max=T)
onecycle   cosine up from base/div_factor to base over     OneCycleLR(max_lr=base, total_steps=T)
           pct_start of T, then down to that/final_div
=========  ==============================================  ===================================

``warmup=W`` puts a linear warm-up in front of any of them: the rate grows from start_factor *
base to base over W steps, then the schedule runs over the remaining T - W steps
(SequentialLR([LinearLR(start_factor, total_iters=W), schedule], milestones=[W])). One-cycle has
a warm-up of its own: there ``warmup`` sets its first phase (pct_start = W / T) instead.

One-cycle with ``cycle_momentum`` also cycles the momentum (SGD's momentum, Adam's beta1) against
the rate, from max_momentum down to base_momentum and back, as OneCycleLR does.
"""
import math

from .errors import ConfigError


def _number(owner, name, value, low, high=math.inf, low_open=False, high_open=False):
    """A finite number in [low, high] (an open end where asked), else a ConfigError naming it."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{owner} schedule: {name} must be a number in {interval}, not {value!r}")
    return float(value)


def _whole(owner, name, value, low=0):
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{owner} schedule: {name} must be a whole number >= {low}, not {value!r}")
    return value


def cosine_anneal(start, end, pct):
    """From ``start`` at pct 0 to ``end`` at pct 1 along half a cosine (OneCycleLR's _annealing_cos)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class Schedule:
    name = ""

    def __init__(self, warmup=0, warmup_start=1 / 3):
        self.warmup = _whole(self.name, "warmup", warmup)
        self.warmup_start = _number(self.name, "warmup_start", warmup_start, 0, 1, low_open=True)

    def lr(self, step, total_steps, steps_per_epoch, base_lr) -> float:
        """The learning rate of optimizer step ``step`` (from 0) of a run of ``total_steps``."""
        w = self.warmup
        if step < w:  # LinearLR: start_factor + (1 - start_factor) * t / W
            return base_lr * (self.warmup_start + (1 - self.warmup_start) * step / w)
        return self.after_warmup(step - w, max(total_steps - w, 1), steps_per_epoch, base_lr)

    def after_warmup(self, t, total, steps_per_epoch, base_lr) -> float:
        raise NotImplementedError

    def momentum(self, step, total_steps) -> float | None:
        """The momentum (or Adam's beta1) for that step, where the schedule cycles it; else None."""
        return None

    def params(self) -> dict:
        """The settings besides the warm-up (the constructor's keyword arguments)."""
        return {}

    def config(self) -> dict:
        return dict(name=self.name, warmup=self.warmup, warmup_start=self.warmup_start, **self.params())

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items() if k != 'name')})"


class Constant(Schedule):
    name = "constant"

    def after_warmup(self, t, total, steps_per_epoch, base_lr):
        return base_lr


class Step(Schedule):
    """StepLR: the rate is multiplied by ``gamma`` every ``step_size`` steps (None: every epoch,
    which is what ``fastnn train --lr-decay GAMMA`` does)."""
    name = "step"

    def __init__(self, gamma=0.7, step_size=None, warmup=0, warmup_start=1 / 3):
        super().__init__(warmup, warmup_start)
        self.gamma = _number("step", "gamma", gamma, 0, 1, low_open=True)
        self.step_size = None if step_size is None else _whole("step", "step_size", step_size, low=1)

    def after_warmup(self, t, total, steps_per_epoch, base_lr):
        return base_lr * self.gamma ** (t // (self.step_size or steps_per_epoch))

    def params(self):
        return dict(gamma=self.gamma, step_size=self.step_size)


class Cosine(Schedule):
    """CosineAnnealingLR with T_max the whole run (after the warm-up): from base down to eta_min."""
    name = "cosine"

    def __init__(self, eta_min=0.0, warmup=0, warmup_start=1 / 3):
        super().__init__(warmup, warmup_start)
        self.eta_min = _number("cosine", "eta_min", eta_min, 0)

    def after_warmup(self, t, total, steps_per_epoch, base_lr):
        return cosine_anneal(base_lr, self.eta_min, min(t, total) / total)

    def params(self):
        return dict(eta_min=self.eta_min)


class OneCycle(Schedule):
    """OneCycleLR (two phases, cosine annealing): base_lr is max_lr. ``warmup`` (steps), when set,
    replaces pct_start."""
    name = "onecycle"

    def __init__(self, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, cycle_momentum=False,
                 base_momentum=0.85, max_momentum=0.95, warmup=0, warmup_start=1 / 3):
        super().__init__(warmup, warmup_start)
        self.pct_start = _number("onecycle", "pct_start", pct_start, 0, 1, low_open=True, high_open=True)
        self.div_factor = _number("onecycle", "div_factor", div_factor, 0, low_open=True)
        self.final_div_factor = _number("onecycle", "final_div_factor", final_div_factor, 0, low_open=True)
        self.cycle_momentum = bool(cycle_momentum)
        self.base_momentum = _number("onecycle", "base_momentum", base_momentum, 0, 1)
        self.max_momentum = _number("onecycle", "max_momentum", max_momentum, 0, 1)

    def _phase(self, step, total_steps):
        """(pct through the phase, which phase: 0 rising, 1 falling), as OneCycleLR.get_lr finds them."""
        warmup_end = (self.warmup if self.warmup else self.pct_start * total_steps) - 1
        end = total_steps - 1
        step = min(step, end)  # OneCycleLR refuses steps past the end; the rate stays at its last value
        if step <= warmup_end:
            return (step / warmup_end if warmup_end > 0 else 1.0), 0
        return (step - warmup_end) / (end - warmup_end), 1

    def lr(self, step, total_steps, steps_per_epoch, base_lr):
        initial = base_lr / self.div_factor
        pct, phase = self._phase(step, total_steps)
        if phase == 0:
            return cosine_anneal(initial, base_lr, pct)
        return cosine_anneal(base_lr, initial / self.final_div_factor, pct)

    def momentum(self, step, total_steps):
        if not self.cycle_momentum:
            return None
        pct, phase = self._phase(step, total_steps)
        high, low = self.max_momentum, self.base_momentum
        return cosine_anneal(high, low, pct) if phase == 0 else cosine_anneal(low, high, pct)

    def params(self):
        return dict(pct_start=self.pct_start, div_factor=self.div_factor, final_div_factor=self.final_div_factor,
                    cycle_momentum=self.cycle_momentum, base_momentum=self.base_momentum,
                    max_momentum=self.max_momentum)


SCHEDULES = {cls.name: cls for cls in (Constant, Step, Cosine, OneCycle)}


def make(name="constant", **params) -> Schedule:
    """A schedule by name (SCHEDULES), with its keyword arguments; ``make(**s.config())`` rebuilds ``s``."""
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule {name!r}: choose one of {', '.join(SCHEDULES)}")
    try:
        return SCHEDULES[name](**params)
    except TypeError as e:  # a keyword this schedule does not have
        raise ConfigError(f"schedule {name!r}: {e}") from e
