r"""Trajectories paired with their equations, for operator + symbolic learning (PROSE).

Each sample is one ODE of a family from the registry, with parameters perturbed around their
defaults, solved by scipy on $[0, t_\mathrm{end}]$:

* data input: noisy observations $(t_i, u(t_i))$ for $t_i < t_\mathrm{input}$, zero-padded to
  the largest state dimension $D$;
* data output: the clean states at the remaining times (query times);
* symbol output: the field in prefix notation with 3-token floats (:mod:`sciml.symbolic`);
* symbol input: its skeleton (each float -> ``<C>``), optionally corrupted by one added or one
  deleted term.

Every right-hand side is expanded into a sum of terms ``coefficient(parameters) * monomial(state)``;
coefficients that depend on parameters are rounded to the 3 significant digits the float tokens
carry *before* solving, so the target tokens are the exact equation of the trajectory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sympy
import torch
from scipy.integrate import solve_ivp
from torch.utils.data import DataLoader

from ..symbolic import (
    PrefixVocabulary,
    corrupt_terms,
    expressions_to_prefix,
    parse_expressions,
    round_significant,
    skeleton,
)
from ._base import ProblemDataModule, TensorDictDataset
from ._systems import SYSTEMS, DynamicalSystem, get_system, register_system

__all__ = ["CHAOTIC_FAMILIES", "CLASSIC_FAMILIES", "EquationFamily", "ODEOperatorDataModule"]

#: the paper's 3-D chaotic set available in the registry
CHAOTIC_FAMILIES = (
    "lorenz",
    "rossler",
    "thomas",
    "aizawa",
    "chen_lee",
    "halvorsen",
    "sprott_b",
)
#: low-dimensional systems for the CPU-sized benchmark
CLASSIC_FAMILIES = (
    "exponential_decay",
    "logistic_growth",
    "damped_oscillator",
    "lotka_volterra",
    "van_der_pol",
)

# Systems of the PROSE data set missing from the foundation zoo; parameter values follow the
# usual chaotic regimes (Sprott 2010) with the PROSE choices where they differ.
_EXTRA_SYSTEMS = {
    "rossler": dict(
        state=["x", "y", "z"],
        rhs=["-y - z", "x + a*y", "b + z*(x - c)"],
        parameters={"a": 0.1, "b": 0.1, "c": 14.0},
        description="Rössler attractor",
    ),
    "thomas": dict(
        state=["x", "y", "z"],
        rhs=["sin(y) - b*x", "sin(z) - b*y", "sin(x) - b*z"],
        parameters={"b": 0.18},
        description="Thomas cyclically symmetric attractor",
    ),
    "aizawa": dict(
        state=["x", "y", "z"],
        rhs=[
            "(z - b)*x - d*y",
            "d*x + (z - b)*y",
            "c + a*z - z**3/3 - (x**2 + y**2)*(1 + e*z) + f*z*x**3",
        ],
        parameters={"a": 0.95, "b": 0.7, "c": 0.6, "d": 3.5, "e": 0.25, "f": 0.1},
        description="Aizawa attractor",
    ),
    "chen_lee": dict(
        state=["x", "y", "z"],
        rhs=["a*x - y*z", "b*y + x*z", "c*z + x*y/3"],
        parameters={"a": 5.0, "b": -10.0, "c": -0.38},
        description="Chen-Lee attractor",
    ),
    "halvorsen": dict(
        state=["x", "y", "z"],
        rhs=["-a*x - 4*y - 4*z - y**2", "-a*y - 4*z - 4*x - z**2", "-a*z - 4*x - 4*y - x**2"],
        parameters={"a": 1.89},
        description="Halvorsen cyclically symmetric attractor",
    ),
    "sprott_b": dict(
        state=["x", "y", "z"],
        rhs=["a*y*z", "x - b*y", "c - x*y"],
        parameters={"a": 1.0, "b": 1.0, "c": 1.0},
        description="Sprott case B",
    ),
    "double_pendulum": dict(
        state=["theta1", "theta2", "omega1", "omega2"],
        rhs=[
            "omega1",
            "omega2",
            "(-3*g*sin(theta1) - g*sin(theta1 - 2*theta2) - 2*sin(theta1 - theta2)"
            "*(omega2**2 + omega1**2*cos(theta1 - theta2))) / (3 - cos(2*theta1 - 2*theta2))",
            "(2*sin(theta1 - theta2)*(2*omega1**2 + 2*g*cos(theta1) "
            "+ omega2**2*cos(theta1 - theta2))) / (3 - cos(2*theta1 - 2*theta2))",
        ],
        parameters={"g": 9.81},
        description="double pendulum, unit masses and lengths",
    ),
    "logistic_growth": dict(
        state=["x"],
        rhs=["r*x - s*x**2"],
        parameters={"r": 0.8, "s": 0.4},
        y0_low=[0.5],
        y0_high=[2.0],
        description="logistic growth x' = r x - s x^2",
    ),
    "duffing_unforced": dict(
        state=["x", "v"],
        rhs=["v", "-delta*v - alpha*x - beta*x**3"],
        parameters={"alpha": -1.0, "beta": 1.0, "delta": 0.3},
        description="unforced double-well Duffing oscillator",
    ),
}
for _name, _spec in _EXTRA_SYSTEMS.items():
    if _name not in SYSTEMS:
        _d = len(_spec["state"])
        register_system(
            _name,
            **{"y0_low": [-2.0] * _d, "y0_high": [2.0] * _d, "t_span": (0.0, 6.0), **_spec},
        )


@dataclass(frozen=True)
class EquationFamily:
    r"""A registered system as $f_i(u) = \sum_k c_{ik}(p)\, m_{ik}(u)$ over fixed terms $m_{ik}$.

    Built by :meth:`from_system`; :meth:`draw` perturbs the parameters and returns the rounded
    coefficients, the sympy field (over ``u_0 ..``) and a numpy right-hand side for scipy.
    """

    system: DynamicalSystem
    terms: tuple[tuple[tuple[sympy.Expr, sympy.Expr], ...], ...]

    @classmethod
    def from_system(cls, name: str) -> EquationFamily:
        system = get_system(name)
        if system.is_stochastic:
            raise ValueError(f"family {name!r} is stochastic; ODEOperatorDataModule needs ODEs")
        state = [sympy.Symbol(s) for s in system.state]
        renamed = {s: sympy.Symbol(f"u_{i}") for i, s in enumerate(state)}
        parameters = {sympy.Symbol(p) for p in system.parameters}
        time = sympy.Symbol("t")
        components = []
        parsed = parse_expressions(
            system.rhs,
            variables=(*system.state, "t"),
            parameters={str(p): p for p in parameters},
            where=f"family {name!r}: rhs",
        )
        for expr in map(sympy.expand, parsed):
            grouped: dict[sympy.Expr, sympy.Expr] = {}
            for term in sympy.Add.make_args(expr):
                coefficient, monomial = term.as_independent(*state, time, as_Add=False)
                if monomial.free_symbols & parameters:
                    raise ValueError(
                        f"family {name!r}: parameters inside {monomial} are not supported "
                        "(parameters must enter as coefficients of additive terms)"
                    )
                monomial = monomial.xreplace(renamed)
                grouped[monomial] = grouped.get(monomial, 0) + coefficient
            components.append(tuple((c, m) for m, c in grouped.items()))
        return cls(system, tuple(components))

    @property
    def dim(self) -> int:
        return self.system.dim

    def draw(self, rng: np.random.Generator, spread: float) -> tuple[list[sympy.Expr], callable]:
        """Parameters ``p * (1 + U[-spread, spread])`` -> ``(field over u_i, numpy f(t, y))``."""
        values = {
            sympy.Symbol(k): v * (1 + rng.uniform(-spread, spread))
            for k, v in self.system.parameters.items()
        }
        expressions, numeric = [], []
        for component in self.terms:
            expr, parts = sympy.Integer(0), []
            for coefficient, monomial in component:
                if coefficient.free_symbols:
                    value = round_significant(float(coefficient.xreplace(values)))
                    if value == 0:
                        continue
                    coefficient = sympy.Float(value)
                expr = expr + coefficient * monomial
                parts.append((float(coefficient), monomial))
            expressions.append(expr)
            numeric.append(parts)
        names = [sympy.Symbol("t"), *(sympy.Symbol(f"u_{i}") for i in range(self.dim))]
        compiled = [
            [(c, sympy.lambdify(names, m, modules="numpy")) for c, m in parts] for parts in numeric
        ]

        def rhs(t: float, y: np.ndarray) -> np.ndarray:
            return np.array([sum(c * m(t, *y) for c, m in parts) for parts in compiled])

        return expressions, rhs


def _blow_up(t: float, y: np.ndarray) -> float:
    return 1e3 - np.max(np.abs(y))


_blow_up.terminal = True


class _CorruptedSymbols(TensorDictDataset):
    """Training set whose symbol input is drawn on the fly: the clean skeleton, or the skeleton
    with one added or one deleted term, with probabilities ``(1 - a - d, a, d)``.

    Each loader process (the main one, or worker ``w``) draws from its own stream, seeded by
    ``seed`` (and ``w``); :meth:`restart` rewinds the streams. The data module restarts them for
    every training loader, so a fit sees the same corruptions whatever was fitted before it.
    """

    def __init__(self, tensors, probabilities: Sequence[float], seed: int) -> None:
        super().__init__(tensors)
        self.probabilities = torch.tensor(probabilities)
        self.seed = seed
        self.restart()

    def restart(self) -> None:
        self._generators: dict[int, torch.Generator] = {}

    def _generator(self) -> torch.Generator:
        worker = torch.utils.data.get_worker_info()
        stream = 0 if worker is None else worker.id + 1
        if stream not in self._generators:
            self._generators[stream] = torch.Generator().manual_seed(self.seed + 1_000_003 * stream)
        return self._generators[stream]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = super().__getitem__(index)
        mode = torch.multinomial(self.probabilities, 1, generator=self._generator())
        item["symbols"] = item["skeletons"][int(mode)]
        return item


class ODEOperatorDataModule(ProblemDataModule):
    r"""PROSE data: trajectory windows, query times and (skeleton, equation) token sequences.

    Samples cycle through ``families``; each draws parameters ``p (1 + U[-s, s])`` and an initial
    state uniformly in ``ic_range`` (or the system's box), is solved by ``solve_ivp`` (LSODA) on
    ``n_times`` equally spaced times of ``[0, t_end]``, and is redrawn if the solve fails or
    ``|u| > 1e3``. Noise is the PROSE model: $\tilde u = u + \gamma \|u\| z / \|z\|$ with
    $z \sim N(0, I)$ over the whole trajectory (so ``noise`` is a relative L2 level).

    Batches are dicts: ``t_in (B, N)``, ``u_in (B, N, D)`` (noisy), ``u_in_clean (B, N, D)``,
    ``t_out (B, Q)``, ``u_out (B, Q, D)`` (clean), ``u_out_noisy``, ``mask (B, D)`` (1 on real
    components),
    ``dim (B,)``, ``family (B,)``, ``y0 (B, D)`` (clean initial state), ``target (B, L)``
    (``<bos>`` equation ``<eos>`` ids), ``skeletons (B, 3, L)`` (clean, +term, -term),
    ``symbols (B, L)`` (the symbol input: drawn on the fly in training from a stream seeded by
    ``seed`` that restarts with every training loader, so each fit sees the same corruptions; the
    clean skeleton in val/test) and ``symbols_corrupted (B, L)`` (a pre-drawn corruption, for
    robustness tests).

    Args:
        families: registry names (see :data:`CLASSIC_FAMILIES`, :data:`CHAOTIC_FAMILIES`).
        param_spread: relative half-width ``s`` of the parameter perturbation.
        ic_range: ``(low, high)`` box for every component; ``None`` uses each system's box.
        noise: relative noise level $\gamma$ on the observations.
        n_train, n_val, n_test: trajectories per split.
        t_end, n_times, t_input: time grid and the end of the input window.
        max_dim: padding dimension ``D`` (default: the largest family dimension).
        symbol_length: token length of ``target``/``skeletons`` including ``<bos>``/``<eos>``.
        add_term_prob, delete_term_prob: symbol-corruption probabilities.
    """

    def __init__(
        self,
        families: list[str] = list(CLASSIC_FAMILIES),  # noqa: B006 (never mutated)
        *,
        param_spread: float = 0.1,
        ic_range: tuple[float, float] | None = None,
        noise: float = 0.02,
        n_train: int = 4000,
        n_val: int = 200,
        n_test: int = 500,
        t_end: float = 6.0,
        n_times: int = 96,
        t_input: float = 2.0,
        max_dim: int | None = None,
        symbol_length: int = 64,
        add_term_prob: float = 0.15,
        delete_term_prob: float = 0.15,
        seed: int = 0,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__(
            seed=seed,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            cache_dir=cache_dir,
        )
        self.save_hyperparameters()
        if not families:
            raise ValueError("data.families must name at least one system")
        unknown = [f for f in families if f not in SYSTEMS]
        if unknown:
            raise ValueError(f"data.families: unknown {unknown}; registered: {sorted(SYSTEMS)}")
        self.families = [EquationFamily.from_system(f) for f in families]
        dims = [f.dim for f in self.families]
        self.max_dim = max(dims) if max_dim is None else max_dim
        if self.max_dim < max(dims):
            raise ValueError(f"data.max_dim={max_dim} is below the largest family dim {max(dims)}")
        if not 0 <= param_spread < 1:
            raise ValueError(f"data.param_spread must lie in [0, 1), got {param_spread}")
        if noise < 0:
            raise ValueError(f"data.noise must be >= 0, got {noise}")
        if min(n_train, n_val, n_test) < 1:
            raise ValueError("data.n_train, data.n_val and data.n_test must be >= 1")
        if not 0 < t_input < t_end:
            raise ValueError(f"data.t_input must lie in (0, t_end={t_end}), got {t_input}")
        if add_term_prob < 0 or delete_term_prob < 0 or add_term_prob + delete_term_prob > 1:
            raise ValueError(
                "data.add_term_prob and data.delete_term_prob must be >= 0 with sum <= 1"
            )
        times = np.linspace(0.0, t_end, n_times)
        self.n_input = int((times < t_input).sum())
        if not 1 <= self.n_input < n_times:
            raise ValueError(
                f"data.t_input={t_input} leaves {self.n_input} of n_times={n_times} inputs"
            )
        self.vocabulary = PrefixVocabulary(max_dim=self.max_dim)

    @property
    def times(self) -> np.ndarray:
        return np.linspace(0.0, self.hparams.t_end, self.hparams.n_times)

    @property
    def symbol_length(self) -> int:
        return self.hparams.symbol_length

    @property
    def family_names(self) -> list[str]:
        return list(self.hparams.families)

    def _solve(self, family: EquationFamily, rng: np.random.Generator):
        hp = self.hparams
        for _ in range(100):
            expressions, rhs = family.draw(rng, hp.param_spread)
            system = family.system
            low, high = (system.y0_low, system.y0_high) if hp.ic_range is None else hp.ic_range
            y0 = rng.uniform(low, high, size=family.dim)
            with np.errstate(all="ignore"):
                solution = solve_ivp(
                    rhs,
                    (0.0, hp.t_end),
                    y0,
                    method="LSODA",
                    t_eval=self.times,
                    rtol=1e-6,
                    atol=1e-8,
                    events=_blow_up,  # stop early instead of chasing a finite-time blow-up
                )
            if (
                solution.status == 0
                and solution.y.shape[1] == hp.n_times
                and np.all(np.abs(solution.y) < 1e3)
            ):
                return expressions, solution.y.T
        raise RuntimeError(f"family {system.name!r}: 100 draws failed to solve or blew up")

    def _ids(self, tokens: list[str], what: str) -> list[int]:
        try:
            return self.vocabulary.encode(tokens, length=self.hparams.symbol_length)
        except ValueError as err:
            raise ValueError(f"{what}: {err}; raise data.symbol_length") from None

    def generate(self) -> dict[str, torch.Tensor]:
        hp = self.hparams
        rng = np.random.default_rng(hp.seed)
        n = hp.n_train + hp.n_val + hp.n_test
        D, T, N = self.max_dim, hp.n_times, self.n_input
        clean = np.zeros((n, T, D))
        noisy = np.zeros((n, T, D))
        mask = np.zeros((n, D))
        family_index = np.arange(n) % len(self.families)
        targets, skeletons = [], []
        probabilities = [1 - hp.add_term_prob - hp.delete_term_prob, hp.add_term_prob]
        corruption = rng.choice(3, size=n, p=[*probabilities, hp.delete_term_prob])
        for i in range(n):
            family = self.families[family_index[i]]
            d = family.dim
            expressions, path = self._solve(family, rng)
            z = rng.standard_normal(path.shape)
            scale = hp.noise * np.linalg.norm(path) / np.linalg.norm(z)
            clean[i, :, :d], noisy[i, :, :d], mask[i, :d] = path, path + scale * z, 1.0
            variables = [f"u_{k}" for k in range(d)]
            tokens = expressions_to_prefix(expressions, variables=variables)
            targets.append(self._ids(tokens, f"equation of {family.system.name}"))
            variants = [
                corrupt_terms(expressions, mode, rng, variables=variables) for mode in (0, 1, -1)
            ]
            skeletons.append(
                [
                    self._ids(skeleton(expressions_to_prefix(v, variables=variables)), "skeleton")
                    for v in variants
                ]
            )
        t = torch.as_tensor(self.times, dtype=torch.float32)
        f32 = dict(dtype=torch.float32)
        skeleton_ids = torch.tensor(skeletons, dtype=torch.long)
        return {
            "t_in": t[:N].expand(n, N).clone(),
            "u_in": torch.as_tensor(noisy[:, :N], **f32),
            "u_in_clean": torch.as_tensor(clean[:, :N], **f32),
            "t_out": t[N:].expand(n, T - N).clone(),
            "u_out": torch.as_tensor(clean[:, N:], **f32),
            "u_out_noisy": torch.as_tensor(noisy[:, N:], **f32),
            "mask": torch.as_tensor(mask, **f32),
            "dim": torch.as_tensor(mask.sum(1), dtype=torch.long),
            "family": torch.as_tensor(family_index, dtype=torch.long),
            "y0": torch.as_tensor(clean[:, 0], **f32),
            "target": torch.tensor(targets, dtype=torch.long),
            "skeletons": skeleton_ids,
            "symbols": skeleton_ids[:, 0].clone(),
            "symbols_corrupted": skeleton_ids[torch.arange(n), torch.as_tensor(corruption)],
        }

    def with_noise(self, split: str, noise: float, seed: int = 0) -> TensorDictDataset:
        r"""The ``split`` re-observed at another noise level, for robustness tests.

        Fresh noise of the generation model, $\tilde u = u + \gamma \|u\| z / \|z\|$ over each
        whole clean trajectory (real components only), replaces ``u_in`` and ``u_out_noisy``;
        everything else (clean states, symbols) is kept.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            noise: relative level $\gamma \ge 0$.
            seed: seed of the noise draw.
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}")
        if not self.splits:
            self.setup()
        tensors = dict(self.splits[split].tensors)
        if "u_in_clean" not in tensors:
            raise ValueError("the cached data predates clean inputs: delete the cache_dir file")
        n_input = tensors["u_in"].shape[1]
        clean = torch.cat([tensors["u_in_clean"], tensors["u_out"]], 1)
        mask = tensors["mask"][:, None, :]
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(clean.shape, generator=generator) * mask
        scale = noise * clean.flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1)
        noisy = clean + scale[:, None, None] * z
        tensors["u_in"], tensors["u_out_noisy"] = noisy[:, :n_input], noisy[:, n_input:]
        return TensorDictDataset(tensors)

    def split(self, data: dict[str, torch.Tensor]) -> dict[str, TensorDictDataset]:
        hp = self.hparams
        edges = np.cumsum([0, hp.n_train, hp.n_val, hp.n_test])
        parts = {
            name: {k: v[edges[j] : edges[j + 1]] for k, v in data.items()}
            for j, name in enumerate(("train", "val", "test"))
        }
        probabilities = [
            1 - hp.add_term_prob - hp.delete_term_prob,
            hp.add_term_prob,
            hp.delete_term_prob,
        ]
        return {
            "train": _CorruptedSymbols(parts["train"], probabilities, hp.seed),
            "val": TensorDictDataset(parts["val"]),
            "test": TensorDictDataset(parts["test"]),
        }

    def train_dataloader(self) -> DataLoader:
        loader = super().train_dataloader()
        loader.dataset.restart()
        return loader
