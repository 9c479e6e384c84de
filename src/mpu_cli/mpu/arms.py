"""The arms of an experiment — clean, noised, mpu — and everything that depends on which one a run is.

One object per arm, in `ARMS` (report order): how many copies it publishes, whether they carry noise, zero-sum
noise and a secret reparameterization, the α each copy's noise is scaled by, its effective κ and m (what
results.csv records), its rules on m, its run-folder tag, its variant name (conf/variant), its report name,
label, order and colours. Everyone else asks this module instead of comparing arm names. Plain Python: the
config's resolvers and the reports read it without loading torch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from enum import StrEnum


class NoisedAlpha(StrEnum):
    """server.noised_alpha: the noised copy's α is 1 (σ itself), or the mean / largest α_k that MPU's m copies
    would carry under the same schedule and m, so that one noisy copy can be compared like for like with MPU."""

    one = "one"
    mean = "mean"
    max = "max"


ALPHA_ONE = NoisedAlpha.one
NOISED_ALPHAS = tuple(NoisedAlpha)
# Names leave out what is the usual choice: the linear α schedule (the reference code's) and, in variant
# names, the paper's m = 2.
PLAIN_SCHEDULE = "linear"
PLAIN_M = 2


def one_copy_alpha(kind: str, alphas: list[float]) -> float:
    """The noised copy's α from the α_k of MPU's copies: one → 1, mean, max."""
    if kind == ALPHA_ONE:
        return 1.0
    if kind == NoisedAlpha.mean:
        return sum(alphas) / len(alphas)
    if kind == NoisedAlpha.max:
        return max(alphas)
    raise ValueError(f"noised_alpha={kind!r} is not one of {', '.join(NOISED_ALPHAS)}")


def _given(value):
    """None for a missing or blank (NaN) cell of a report row."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _schedule(schedule, sep: str) -> str:
    """The α schedule as a name suffix; nothing for the linear one."""
    schedule = _given(schedule)
    return "" if schedule is None or schedule == PLAIN_SCHEDULE else f"{sep}{schedule}"


class Arm(ABC):
    """What one arm means. Subclasses set the flags and the name formats that differ."""

    name: str
    noisy: bool  # its copies carry noise (κ applies); the arm without noise is the baseline the others meet
    zero_sum: bool  # the copies' noise sums to zero across the m copies
    reparameterized: bool  # each copy under its own secret transform (the audit aligns copies before attacking)
    colour: str  # its colour in the plots
    shades: str | None  # matplotlib colormap shading several series of the arm (None: all in `colour`)
    palette: tuple[str, ...]  # the break map's colours for the arm's series, in order

    def copies(self, m: int) -> int:
        """How many copies a round publishes."""
        return 1

    def draws_alphas(self, noised_alpha: str) -> bool:
        """Whether the round draws the α_k of m copies from the α schedule (and m and the schedule apply)."""
        return False

    def copy_alphas(self, alphas: list[float], noised_alpha: str) -> list[float]:
        """The α of each published copy, from the α_k drawn (`draws_alphas`; else [1.0])."""
        return alphas

    def effective_kappa(self, kappa: float) -> float:
        return kappa if self.noisy else 0.0

    def effective_m(self, m: int, noised_alpha: str) -> int:
        """results.csv's m: the copies published, or the m whose α the one copy takes."""
        return m if self.draws_alphas(noised_alpha) else 1

    def check(self, m: int, noised_alpha: str) -> None:
        """The arm's own rules on its settings; raises ValueError with one line."""

    @abstractmethod
    def tag(self, kappa, m, schedule, noised_alpha) -> str:
        """The arm in run-folder names (the `mpu_arm_tag` resolver)."""

    @abstractmethod
    def variant(self, kappa: float, m: int, schedule: str, noised_alpha: str) -> str:
        """The name of the conf/variant file holding these settings."""

    @abstractmethod
    def report_name(self, m, schedule, noised_alpha) -> str:
        """The arm without κ in reports ("noised", "mpu m=4 pow2"); blank settings count as the defaults."""

    def report_label(self, kappa, m, schedule, noised_alpha) -> str:
        """The arm with its κ ("noised κ=0.1", "mpu κ=0.1 m=2", "noised κ=1 α=mean(m=2)")."""
        name = self.report_name(m, schedule, noised_alpha)
        if not self.noisy:
            return name
        arm, _, rest = name.partition(" ")
        return f"{arm} κ={float(kappa):g}" + (f" {rest}" if rest else "")

    def settings(self, out: dict) -> dict:
        """A report's settings of a run (short keys) with the keys that do not apply to the arm blanked."""
        return out


class Clean(Arm):
    name, noisy, zero_sum, reparameterized = "clean", False, False, False
    colour, shades, palette = "tab:green", None, ("tab:green",)

    def tag(self, kappa, m, schedule, noised_alpha) -> str:
        return self.name

    def variant(self, kappa, m, schedule, noised_alpha) -> str:
        return self.name

    def report_name(self, m, schedule, noised_alpha) -> str:
        return self.name

    def settings(self, out: dict) -> dict:
        out |= {"kappa": 0.0, "m": 1}
        out |= {k: None for k in out if k.startswith("server.")}
        return out


class Noised(Arm):
    """One copy θ + α·ε, independent noise, no reparameterization."""

    name, noisy, zero_sum, reparameterized = "noised", True, False, False
    colour, shades = "tab:red", "Reds"
    palette = ("tab:red", "tab:orange", "tab:brown", "tab:pink", "gold")

    def draws_alphas(self, noised_alpha: str) -> bool:
        return noised_alpha in NOISED_ALPHAS and noised_alpha != ALPHA_ONE

    def copy_alphas(self, alphas: list[float], noised_alpha: str) -> list[float]:
        return [one_copy_alpha(noised_alpha, alphas)]

    def check(self, m: int, noised_alpha: str) -> None:
        if self.draws_alphas(noised_alpha) and m < 2:
            raise ValueError(f"m={m} with arm=noised server.noised_alpha={noised_alpha}: the copy takes the α of "
                             "m MPU copies, so m must be >= 2")

    def tag(self, kappa, m, schedule, noised_alpha) -> str:
        if noised_alpha == ALPHA_ONE:
            return f"{self.name}_k{kappa}"
        return f"{self.name}_k{kappa}_a{noised_alpha}_m{m}{_schedule(schedule, '_')}"

    def variant(self, kappa, m, schedule, noised_alpha) -> str:
        name = f"{self.name}_k{kappa:g}"
        if noised_alpha == ALPHA_ONE:
            return name
        return name + f"_a{noised_alpha}" + (f"_m{m}" if m != PLAIN_M else "") + _schedule(schedule, "_")

    def report_name(self, m, schedule, noised_alpha) -> str:
        alpha = _given(noised_alpha)
        if alpha is None or alpha == ALPHA_ONE:
            return self.name
        return f"{self.name} α={alpha}(m={int(m)}){_schedule(schedule, ' ')}"

    def settings(self, out: dict) -> dict:
        # one copy: m and the α schedule matter only when the copy takes the α of m MPU copies
        out["server.noised_alpha"] = out.get("server.noised_alpha") or ALPHA_ONE
        if out["server.noised_alpha"] == ALPHA_ONE:
            out |= {"m": 1, "server.alpha_schedule": None}
        return out


class MPU(Arm):
    """m copies T_k(θ + α_k ε⁰_k): zero-sum noise, each copy under its own secret reparameterization."""

    name, noisy, zero_sum, reparameterized = "mpu", True, True, True
    colour, shades = "tab:blue", "Blues"
    palette = ("tab:blue", "navy", "tab:cyan", "tab:purple", "tab:olive", "tab:gray")

    def copies(self, m: int) -> int:
        return m

    def draws_alphas(self, noised_alpha: str) -> bool:
        return True

    def check(self, m: int, noised_alpha: str) -> None:
        if m < 2:
            raise ValueError(f"m={m} with arm=mpu: MPU needs m >= 2 copies, its noise sums to zero across them "
                             "(use arm=noised for one)")

    def tag(self, kappa, m, schedule, noised_alpha) -> str:
        return f"{self.name}_k{kappa}_m{m}{_schedule(schedule, '_')}"

    def variant(self, kappa, m, schedule, noised_alpha) -> str:
        return f"{self.name}_k{kappa:g}" + (f"_m{m}" if m != PLAIN_M else "") + _schedule(schedule, "_")

    def report_name(self, m, schedule, noised_alpha) -> str:
        return f"{self.name} m={int(m)}{_schedule(schedule, ' ')}"

    def settings(self, out: dict) -> dict:
        out["server.noised_alpha"] = None
        return out


ARMS: dict[str, Arm] = {arm.name: arm for arm in (Clean(), Noised(), MPU())}  # in report order
# The arm as a config choice (`arm=`): Hydra refuses any other name while composing.
ArmName = StrEnum("ArmName", {name: name for name in ARMS}, module=__name__)
BASELINE = next(name for name, arm in ARMS.items() if not arm.noisy)  # what every noisy arm is compared with
NOISY = tuple(name for name, arm in ARMS.items() if arm.noisy)


def arm_of(name) -> Arm:
    """The arm called `name`; ValueError naming the arms for any other."""
    try:
        return ARMS[name]
    except (KeyError, TypeError):
        raise ValueError(f"arm={name!r} is not one of {list(ARMS)}") from None


def arm_of_label(label: str) -> Arm:
    """The arm of a report name or label: its first word."""
    return arm_of(str(label).split()[0])


def order(name_or_label) -> int:
    """An arm's place in reports (clean → noised → mpu); anything else after them."""
    names = list(ARMS)
    head = (str(name_or_label).split() or [""])[0]
    return names.index(head) if head in ARMS else len(names)


def label_order(label: str) -> tuple:
    """Sort key of report labels: by arm, then as text."""
    return order(label), label


def name_order(name: str) -> tuple:
    """Sort key of report names: by arm, the noised copy's α (one, mean, max), fewer settings first, then text."""
    alpha = next((i for i, a in enumerate(NOISED_ALPHAS) if f"α={a}" in name), 0)
    return order(name), alpha, len(name.split()), name


def is_arm_key(key: str) -> bool:
    """A setting the arm decides (κ, m, server.*): runs differing only there share their clean baseline."""
    return key in ("arm", "kappa", "m") or key.startswith("server.")


def tag(arm, kappa, m, schedule=PLAIN_SCHEDULE, noised_alpha=ALPHA_ONE) -> str:
    return arm_of(arm).tag(kappa, m, schedule, noised_alpha)


def arm_name(row: dict) -> str:
    """A report row's arm without κ: clean | noised (one copy at σ) | noised α=mean(m=2) (one copy at the mean /
    largest α of m MPU copies) | mpu m=2, each with the α schedule when it is not linear ("mpu m=4 pow2")."""
    return arm_of(row.get("arm")).report_name(row.get("m"), row.get("server.alpha_schedule"),
                                              row.get("server.noised_alpha"))


def arm_label(row: dict) -> str:
    """A report row's arm with its κ: "noised κ=0.1", "mpu κ=0.1 m=2", "noised κ=1 α=mean(m=2)"."""
    return arm_of(row.get("arm")).report_label(row.get("kappa"), row.get("m"), row.get("server.alpha_schedule"),
                                               row.get("server.noised_alpha"))
