"""The mean-field theory against analytic values, the literature, and direct simulation at large width."""

import math
from collections.abc import Iterator

import numpy as np
import pytest

from shared import theory
from shared.spec import ExperimentSpec
from shared.theory import ACTIVATIONS, compare, expectations, layer_scales, predict

INITS = (
    "default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "lecun_normal",
    "orthogonal", "normal",
)
WIDTH, DEPTH, BATCH = 1000, 10, 16
NORMAL_STD = 0.03  # sigma_w^2 = 0.9 at WIDTH: the ordered side, but not so far that all is zero


# --- the quadrature ------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [1e-8, 0.3, 1.0, 50.0, 1e6])
def test_relu_family_and_linear_have_closed_forms(q):
    assert expectations("relu", q) == pytest.approx((q / 2, 0.5), rel=1e-10)
    slope = theory.LEAKY_SLOPE
    assert expectations("leaky_relu", q) == pytest.approx(((1 + slope**2) * q / 2, (1 + slope**2) / 2), rel=1e-10)
    assert expectations("linear", q) == pytest.approx((q, 1.0), rel=1e-10)


@pytest.mark.parametrize("s2, bound", [(0.3, 0.05), (0.01, 0.2), (1e-6, 1e-3)])
def test_a_uniform_bias_keeps_the_symmetric_closed_forms(s2, bound):
    # PyTorch's default bias is uniform: q = s2 + bound^2 / 3, and relu sees half of it.
    q = s2 + bound**2 / 3
    assert expectations("linear", s2, bound) == pytest.approx((q, 1.0), rel=1e-9)
    assert expectations("relu", s2, bound) == pytest.approx((q / 2, 0.5), rel=1e-9)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "gelu", "silu", "softplus"])
@pytest.mark.parametrize("q", [0.01, 0.5, 2.0])
def test_smooth_activations_agree_with_gauss_hermite(activation, q):
    nodes, weights = np.polynomial.hermite_e.hermegauss(150)
    weights = weights / weights.sum()
    phi, dphi = ACTIVATIONS[activation]
    h = math.sqrt(q) * nodes
    expected = (weights @ phi(h) ** 2, weights @ dphi(h) ** 2)
    assert expectations(activation, q) == pytest.approx(expected, rel=1e-7)


def test_selu_keeps_unit_variance():
    # Klambauer et al. 2017: SELU's constants make E[selu(z)^2] = 1 for z ~ N(0, 1).
    assert expectations("selu", 1.0)[0] == pytest.approx(1.0, abs=1e-6)


def test_phi_matches_the_workers_torch_activations():
    torch = pytest.importorskip("torch")
    from worker.activations import ACTIVATIONS as TORCH

    x = np.linspace(-6, 6, 241)
    for name, (phi, dphi) in ACTIVATIONS.items():
        z = torch.tensor(x, dtype=torch.float64)
        assert phi(x) == pytest.approx(TORCH[name].module()(z).numpy(), abs=1e-12), name
        assert dphi(x) == pytest.approx(TORCH[name].derivative(z).numpy(), abs=1e-12), name


# --- scales, inputs and the literature -----------------------------------------------------------


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("fan_in, fan_out", [(64, 64), (2, 64), (64, 10), (512, 512)])
def test_sigma_w2_is_fan_in_times_the_weight_variance_the_worker_draws(init, fan_in, fan_out):
    pytest.importorskip("torch")
    from worker.inits import expected_std

    scales = layer_scales(init, fan_in, fan_out, NORMAL_STD)
    assert scales.sigma_w2 == pytest.approx(fan_in * expected_std(init, fan_in, fan_out, NORMAL_STD) ** 2)
    if init == "default":  # nn.Linear's bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert scales.bias_bound == pytest.approx(1 / math.sqrt(fan_in))
        assert scales.sigma_b2 == pytest.approx(1 / (3 * fan_in))
    else:
        assert scales.sigma_b2 == 0


@pytest.mark.parametrize("dataset", ["spirals", "digits", "random"])
def test_q_in_is_the_datasets_mean_square_per_feature(dataset):
    pytest.importorskip("torch")
    from worker.datasets import load_dataset

    data = load_dataset(ExperimentSpec(dataset=dataset, width=256), "cpu")
    measured = float((data.x.double() ** 2).mean())
    assert theory.input_second_moment(dataset) == pytest.approx(measured, abs=0.01)


@pytest.mark.parametrize(
    "activation, init, regime, chi_star",
    [
        ("relu", "kaiming_normal", "critical", 1.0),  # He et al. 2015
        ("relu", "xavier_normal", "ordered", 0.5),
        ("relu", "default", "ordered", 1 / 6),  # sigma_w^2 = 1/3
        ("tanh", "xavier_normal", "critical", 1.0),  # sigma_w^2 = 1, sigma_b^2 = 0: q* = 0, chi* = 1
        ("tanh", "kaiming_normal", "chaotic", None),  # sigma_w^2 = 2 > 1 with no bias
        ("sigmoid", "xavier_normal", "ordered", None),  # sigma'(h) <= 1/4
        ("linear", "orthogonal", "critical", 1.0),
        ("linear", "kaiming_uniform", "chaotic", 2.0),
        ("selu", "lecun_normal", "chaotic", 1.0716),  # q* = 1, and slightly chaotic
    ],
)
def test_regimes_from_the_literature(activation, init, regime, chi_star):
    prediction = predict(10, 256, activation, init)
    assert prediction.regime == regime
    assert all(layer["regime"] == regime for layer in prediction.layers())
    if chi_star is not None:
        assert prediction.chi_star == pytest.approx(chi_star, abs=1e-4)
    if regime == "critical" and chi_star == 1.0:
        assert prediction.depth_scale is None  # no exponential decay: an infinite depth scale
    else:
        assert prediction.depth_scale == pytest.approx(1 / abs(math.log(prediction.chi_star)))


def test_the_edge_of_chaos_of_tanh_with_normal_init():
    # sigma_w^2 = width * std^2: 0.5 ordered, 1 critical, 4 chaotic (Poole et al. 2016, sigma_b = 0).
    regimes = [predict(8, 100, "tanh", "normal", init_std=std).regime for std in (math.sqrt(0.005), 0.1, 0.2)]
    assert regimes == ["ordered", "critical", "chaotic"]


def test_tanh_fixed_point_and_its_depth_scale():
    prediction = predict(10, 128, "tanh", "kaiming_normal")
    q_star = prediction.q_star
    # q* = sigma_w^2 E[tanh(h)^2], h ~ N(0, q*), and q converges to it at rate e^(-1/xi_q).
    assert q_star == pytest.approx(2 * expectations("tanh", q_star)[0], rel=1e-8)
    slope = 2 * (expectations("tanh", q_star * 1.001)[0] - expectations("tanh", q_star * 0.999)[0]) / (0.002 * q_star)
    assert prediction.depth_scale_q == pytest.approx(-1 / math.log(slope), rel=1e-3)


def test_profiles_follow_chi():
    prediction = predict(6, 64, "sigmoid", "xavier_uniform")
    steps = np.diff(prediction.act_grad_log10)
    assert steps == pytest.approx(-0.5 * np.log10(prediction.chi[:-1]))
    assert prediction.act_grad_log10[-1] == 0 and prediction.grad_log10[-1] == 0


def test_a_non_square_first_layer_sets_q1_and_the_first_weight_gradient():
    # Spirals: 2 inputs into width 64 with xavier: sigma_w1^2 = 2 * 2 / 66.
    prediction = theory.predict_spec(ExperimentSpec(activation="linear", init="xavier_normal", depth=3))
    assert prediction.q[0] == pytest.approx(4 / 66)
    assert prediction.q[1] == pytest.approx(4 / 66)  # width -> width: sigma_w^2 = 1
    # Weight gradient of layer 1 is |delta_1| |x|, of layer 3 |delta_3| |a_2|: |x|^2 = 2, |a_2|^2 = 64 q.
    assert prediction.grad_log10[0] == pytest.approx(0.5 * math.log10(2 / (64 * 4 / 66)))


def test_extremes_stay_finite_or_null():
    huge = theory.report(ExperimentSpec(depth=200, width=4096, init="normal", init_std=1e6, activation="linear",
                                        dataset="random", steps=1, batch_size=1))
    assert huge["regime"] == "chaotic" and huge["layers"][-1]["q"] is None  # beyond float range: null
    assert huge["layers"][0]["act_grad_log10"] == pytest.approx(0.5 * 199 * math.log10(4096e12), rel=1e-6)


# --- direct simulation ---------------------------------------------------------------------------


class Bases:
    """Weight matrices of unit entry variance, drawn once and scaled per init: the tests share them."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(2024)
        self.cache: dict[str, list[np.ndarray]] = {}
        self.inputs = self.rng.standard_normal((BATCH, WIDTH)).astype(np.float32)
        self.bias = self.rng.uniform(-1, 1, (DEPTH, WIDTH)).astype(np.float32)
        self.output_signal = self.rng.standard_normal((BATCH, WIDTH)).astype(np.float32)

    def get(self, kind: str) -> list[np.ndarray]:
        if kind not in self.cache:
            draw = {
                "normal": lambda: self.rng.standard_normal((WIDTH, WIDTH)),
                "uniform": lambda: self.rng.uniform(-math.sqrt(3), math.sqrt(3), (WIDTH, WIDTH)),
                # Orthogonal, scaled to unit entry variance: one QR, then signed permutations per layer.
                "orthogonal": lambda: self._orthogonal() * math.sqrt(WIDTH),
            }[kind]
            self.cache[kind] = [draw().astype(np.float32) for _ in range(DEPTH)]
        return self.cache[kind]

    def _orthogonal(self) -> np.ndarray:
        if not hasattr(self, "_q"):
            self._q = np.linalg.qr(self.rng.standard_normal((WIDTH, WIDTH)))[0]  # a QR costs seconds: once
        signs = self.rng.choice([-1.0, 1.0], WIDTH)
        return (signs[:, None] * self._q)[self.rng.permutation(WIDTH)][:, self.rng.permutation(WIDTH)]




@pytest.fixture(scope="module")
def bases() -> Iterator[Bases]:
    # Many small matmuls: BLAS threads spinning against each other (and against other
    # processes on a small machine) make them an order of magnitude slower than one thread.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the worker's extras bring it (scikit-learn); without it, just slower
        yield Bases()
        return
    with threadpool_limits(1):
        yield Bases()


def simulate(bases: Bases, activation: str, init: str) -> dict[str, np.ndarray]:
    """Forward and backward through a width x depth MLP drawn as the init draws it: q, |delta|, |dW| per layer."""
    phi, dphi = ACTIVATIONS[activation]
    kind = "orthogonal" if init == "orthogonal" else "uniform" if init.endswith("uniform") or init == "default" else "normal"
    scales = layer_scales(init, WIDTH, WIDTH, NORMAL_STD)
    weights, scale = bases.get(kind), np.float32(math.sqrt(scales.sigma_w2 / WIDTH))
    biases = bases.bias * np.float32(scales.bias_bound)
    x, inputs, pre = bases.inputs, [], []
    for w, b in zip(weights, biases):
        inputs.append(x)
        z = (x @ w.T) * scale + b
        pre.append(z)
        x = phi(z).astype(np.float32)
    delta = dphi(pre[-1]).astype(np.float32) * bases.output_signal
    signal, grad = [0.0] * DEPTH, [0.0] * DEPTH
    for layer in reversed(range(DEPTH)):
        if layer < DEPTH - 1:
            delta = dphi(pre[layer]).astype(np.float32) * (delta @ weights[layer + 1]) * scale
        signal[layer] = np.sum(delta.astype(np.float64) ** 2)
        grad[layer] = np.sum((delta.T @ inputs[layer]).astype(np.float64) ** 2)
    return {
        "q": np.array([np.mean(z.astype(np.float64) ** 2) for z in pre]),
        "phi2": np.array([np.mean(phi(z.astype(np.float64)) ** 2) for z in pre]),
        "act_grad_log10": 0.5 * np.log10(np.array(signal) / signal[-1]),
        "grad_log10": 0.5 * np.log10(np.array(grad) / grad[-1]),
    }


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_theory_matches_simulation_at_large_width(bases, activation, init):
    prediction = predict(DEPTH, WIDTH, activation, init, init_std=NORMAL_STD)
    measured = simulate(bases, activation, init)
    scales = layer_scales(init, WIDTH, WIDTH, NORMAL_STD)
    # One layer at a time, q follows the map from the measured q of the layer below, up to the
    # width's sampling error: for relu, sqrt(Var(relu(h)^2) / width) / E[relu(h)^2] = sqrt(5 / 1000) ~ 0.07.
    one_step = [scales.sigma_w2 * expectations(activation, q - scales.sigma_b2, scales.bias_bound)[0]
                for q in measured["q"][:-1]]
    assert np.log(measured["phi2"][:-1] * scales.sigma_w2 / one_step) == pytest.approx(0, abs=0.25)
    # The whole profile: finite-width fluctuations add up over depth (most for relu: ~0.07 a layer).
    assert np.log(measured["q"] / prediction.q) == pytest.approx(0, abs=0.35)
    assert measured["act_grad_log10"] == pytest.approx(prediction.act_grad_log10, abs=0.06)
    assert measured["grad_log10"] == pytest.approx(prediction.grad_log10, abs=0.12)


# --- the summary's comparison --------------------------------------------------------------------


def _trace(act_grad: list[float], grad: list[float]) -> dict[str, np.ndarray]:
    return {"act_grad_norm": np.array([act_grad + [1.0]]), "grad_norm": np.array([grad + [1.0]])}


def test_compare_puts_measured_beside_predicted():
    spec = ExperimentSpec(depth=3, width=64, activation="relu", init="xavier_normal", dataset="random")
    # relu with sigma_w^2 = 1: chi = 1/2, so the signal's norm halves in square every layer back.
    exact = compare(spec, _trace([0.5, 0.5**0.5, 1.0], [1.0, 1.0, 1.0]))
    assert exact["applies"] and exact["regime"] == "ordered" and exact["chi_star"] == 0.5
    assert [layer["name"] for layer in exact["layers"]] == ["hidden.0", "hidden.1", "hidden.2"]
    assert exact["deviation"]["act_grad_log10"] == {"rms": 0.0, "max": 0.0}
    # The weight gradient: |delta_l| |a_(l-1)|, and the input x has 64 x q_in = 64 vs 64 x q/2 for a_1.
    off = compare(spec, _trace([0.5, 0.5**0.5, 1.0], [10.0, 1.0, 1.0]))
    assert off["layers"][0]["measured_grad_log10"] == 1.0
    assert off["deviation"]["grad_log10"]["max"] == pytest.approx(abs(1.0 - off["layers"][0]["grad_log10"]), abs=1e-3)


def test_compare_skips_values_without_a_logarithm():
    spec = ExperimentSpec(depth=3, width=64, activation="sigmoid", init="xavier_normal", dataset="random")
    result = compare(spec, _trace([0.0, float("nan"), 1.0], [0.0, 1e-3, 1.0]))
    assert result["layers"][0]["measured_act_grad_log10"] is None  # underflowed to 0
    assert result["layers"][1]["measured_act_grad_log10"] is None
    assert result["deviation"]["act_grad_log10"] == {"rms": None, "max": None}
    assert result["deviation"]["grad_log10"]["rms"] is not None


@pytest.mark.parametrize("change", [{"norm": "batchnorm"}, {"norm": "layernorm"}, {"residual": True}])
def test_compare_says_when_the_recursion_does_not_apply(change):
    spec = ExperimentSpec(depth=3, width=64, **change)
    result = compare(spec, _trace([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]))
    assert result["applies"] is False and result["note"]


# --- real training traces at step 0 --------------------------------------------------------------


@pytest.mark.parametrize(
    "activation, init, weight_gradient",
    [("tanh", "xavier_normal", True), ("relu", "kaiming_normal", False), ("relu", "default", True),
     ("sigmoid", "xavier_uniform", False)],
)
def test_the_summary_deviation_is_small_on_real_traces(activation, init, weight_gradient):
    pytest.importorskip("torch")
    from worker.train import train

    spec = ExperimentSpec(depth=10, width=512, activation=activation, init=init, dataset="random", steps=1)
    result = compare(spec, train(spec).trace)
    assert result["deviation"]["act_grad_log10"]["max"] < 0.1, result["deviation"]
    if weight_gradient:
        # The weight gradient sums over the batch: examples whose activations and errors are
        # correlated (non-zero-mean activations, deep relu nets) add cross terms the per-example
        # theory leaves out, so only nets without them are held to it. See README, Theory.
        assert result["deviation"]["grad_log10"]["max"] < 0.15, result["deviation"]


@pytest.mark.parametrize("norm, applies", [("none", True), ("layernorm", False)])
def test_a_finished_run_carries_the_theory_block(redis_client, norm, applies):
    pytest.importorskip("torch")
    from shared.settings import Settings
    from shared.store import Store
    from worker.runner import LeaseKeeper, run

    store = Store(redis_client)
    spec = ExperimentSpec(depth=4, width=64, activation="tanh", init="xavier_normal", dataset="random", steps=2,
                          norm=norm)
    store.create("theory", spec.model_dump(mode="json"))
    assert run(store, Settings(), LeaseKeeper(store, 30), "theory") == "succeeded"
    block = store.get("theory")["summary"]["theory"]
    assert block["applies"] is applies
    if applies:
        assert block["regime"] == "critical" and [layer["name"] for layer in block["layers"]] == [
            "hidden.0", "hidden.1", "hidden.2", "hidden.3"]
        assert block["layers"][0]["measured_act_grad_log10"] is not None
        assert block["deviation"]["act_grad_log10"]["max"] < 0.2
