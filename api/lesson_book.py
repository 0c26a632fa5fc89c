"""The lessons, in teaching order: each one's file in examples/, what to look at, and what it must show.

A claim is a sentence and a condition on the figures of the lesson's runs, keyed by
point label (api.lessons.label: 'relu/kaiming_normal', 'none', 'run' for a single
experiment). The bounds hold at the lesson's full size and at the small size the
tests run (fewer steps, same depth and width), with a margin; the figures measured
at full size are in each lesson's Markdown note.
"""

from collections.abc import Callable
from dataclasses import dataclass

Figures = dict[str, dict]  # point label -> that run's figures (api.lessons.figures)


@dataclass(frozen=True)
class Claim:
    text: str
    holds: Callable[[Figures], bool]


@dataclass(frozen=True)
class Lesson:
    name: str
    title: str
    summary: str
    figure: str  # what to look at, in the dashboard's plots and the trace's metrics
    claims: tuple[Claim, ...]

    def listing(self, lang: str = "en") -> dict[str, str]:
        """The lesson as the dashboard lists it, its words in `lang` (en or zh)."""
        title, summary, figure = CHINESE[self.name] if lang == "zh" else (self.title, self.summary, self.figure)
        return {"name": self.name, "title": title, "summary": summary, "figure": figure,
                "file": self.file, "notes": self.notes}

    @property
    def file(self) -> str:
        return f"{self.name}.json"

    @property
    def notes(self) -> str:
        return f"{self.name}.md"


def verdict(point: str, *verdicts: str) -> Callable[[Figures], bool]:
    return lambda found: found[point]["verdict"] in verdicts


def below(point: str, figure: str, bound: float) -> Callable[[Figures], bool]:
    return lambda found: found[point][figure] < bound


def above(point: str, figure: str, bound: float) -> Callable[[Figures], bool]:
    return lambda found: found[point][figure] > bound


def less(figure: str, smaller: str, larger: str) -> Callable[[Figures], bool]:
    return lambda found: found[smaller][figure] < found[larger][figure]


def every(*conditions: Callable[[Figures], bool]) -> Callable[[Figures], bool]:
    return lambda found: all(condition(found) for condition in conditions)


VANISHING_SIGMOID = Lesson(
    "vanishing-sigmoid",
    "Vanishing gradients: sigmoid through 20 layers",
    "A 20-layer sigmoid MLP with Xavier init: the gradient shrinks about 4x per layer on its way back, "
    "so the first layers get ~1e-12 of the last one's and the net learns nothing.",
    "the gradient-flow plot at step 0 (grad_norm and act_grad_norm per layer against depth, log scale): "
    "a straight line falling ~0.6 decades a layer, on the theory's prediction",
    (
        Claim("the verdict is vanishing", verdict("run", "vanishing")),
        Claim("at step 0 the first hidden layer's backpropagated signal is below 1e-9 of the last's",
              below("run", "step0_signal_ratio", 1e-9)),
        Claim("the signal shrinks by a factor between 3 and 6 per layer (sigmoid' <= 1/4)",
              every(above("run", "signal_shrink_per_layer", 3), below("run", "signal_shrink_per_layer", 6))),
        Claim("the net learns nothing: accuracy stays below 20% (chance is 10%)", below("run", "final_accuracy", 0.2)),
    ),
)

ACTIVATIONS = Lesson(
    "activations",
    "The activation table: ReLU, Leaky ReLU, sigmoid, tanh, GELU, Swish",
    "Six activations in the same 20-layer net with He init: only sigmoid's gradient vanishes outright; "
    "Swish/SiLU's fades ~100x, the others reach the first layer.",
    "the sweep's grid coloured by the step-0 gradient ratio and by final loss; the overlaid step-0 "
    "act_grad_norm profiles of the six runs",
    (
        Claim("sigmoid is vanishing: its step-0 signal ratio is below 1e-6",
              every(verdict("sigmoid", "vanishing"), below("sigmoid", "step0_signal_ratio", 1e-6))),
        Claim("relu, leaky_relu, tanh and gelu keep a step-0 signal ratio above 0.1",
              every(*(above(name, "step0_signal_ratio", 0.1) for name in ("relu", "leaky_relu", "tanh", "gelu")))),
        Claim("silu sits between: its signal ratio is below relu's and far above sigmoid's",
              every(less("step0_signal_ratio", "silu", "relu"), above("silu", "step0_signal_ratio", 1e-4))),
        Claim("relu and tanh end with a lower loss than sigmoid",
              every(less("final_loss", "relu", "sigmoid"), less("final_loss", "tanh", "sigmoid"))),
    ),
)

XAVIER_VS_HE = Lesson(
    "xavier-vs-he",
    "Xavier vs He initialization, with ReLU and with tanh",
    "He init keeps a 20-layer ReLU net's gradient at scale where Xavier halves its square every layer; "
    "Xavier is the match for tanh, and He makes tanh's gradient grow toward the input.",
    "the gradient-flow plot at step 0 of the four runs (act_grad_norm per layer, log scale) with the theory's "
    "prediction; the grid coloured by the step-0 ratio",
    (
        Claim("relu + xavier is vanishing: step-0 signal ratio below 1e-2 (theory: 10^-2.86)",
              every(verdict("relu/xavier_normal", "vanishing"),
                    below("relu/xavier_normal", "step0_signal_ratio", 1e-2))),
        Claim("relu + he keeps the signal at scale: ratio between 0.1 and 10",
              every(above("relu/kaiming_normal", "step0_signal_ratio", 0.1),
                    below("relu/kaiming_normal", "step0_signal_ratio", 10))),
        Claim("tanh + xavier keeps the signal within 20x: ratio above 0.05",
              above("tanh/xavier_normal", "step0_signal_ratio", 0.05)),
        Claim("tanh + he makes it grow toward the input: ratio above 1",
              above("tanh/kaiming_normal", "step0_signal_ratio", 1)),
        Claim("relu trains better with he than with xavier (lower final loss)",
              less("final_loss", "relu/kaiming_normal", "relu/xavier_normal")),
    ),
)

BATCHNORM_SIGMOID = Lesson(
    "batchnorm-sigmoid",
    "BatchNorm rescues a deep sigmoid net",
    "The same 20-layer sigmoid net without and with BatchNorm: without, the gradient vanishes and accuracy "
    "stays at chance; with it, every layer gets a gradient and the net learns the digits.",
    "the gradient-flow plots of the two runs at step 0, and accuracy over steps",
    (
        Claim("without norm: vanishing, step-0 signal ratio below 1e-9",
              every(verdict("none", "vanishing"), below("none", "step0_signal_ratio", 1e-9))),
        Claim("with batchnorm: not vanishing, step-0 signal ratio above 1e-2",
              every(lambda found: found["batchnorm"]["verdict"] != "vanishing",
                    above("batchnorm", "step0_signal_ratio", 1e-2))),
        Claim("with batchnorm accuracy passes 80%; without it stays below 20%",
              every(above("batchnorm", "final_accuracy", 0.8), below("none", "final_accuracy", 0.2))),
    ),
)

CLIPPING_RNN = Lesson(
    "clipping-rnn",
    "Gradient clipping tames an exploding RNN",
    "A tanh RNN whose recurrent weights have a spectral radius of about 1.2: unclipped, its gradient norm "
    "grows ~1e18x and the loss turns NaN; clipped at norm 1, it trains to a finite loss.",
    "total_grad_norm and loss over steps of the two runs, with the clipped steps marked; the per-time-step "
    "gradient (time_grad_norm)",
    (
        Claim("unclipped, the loss turns NaN: verdict diverged after the gradient norm grew over 1e6x",
              every(verdict("none", "diverged"), above("none", "grad_norm_growth", 1e6))),
        Claim("clipped, it does not diverge and ends below an MSE of 0.3 (predicting the mean scores 1/6)",
              every(lambda found: found["norm:1"]["diverged_step"] is None, below("norm:1", "final_loss", 0.3))),
        Claim("clipping acted on more than 30% of the traced steps", above("norm:1", "clipped_share", 0.3)),
    ),
)

DYING_RELU = Lesson(
    "dying-relu",
    "Dying ReLUs from a too-large learning rate",
    "The same ReLU net trained with Adam at lr 0.01 and at lr 0.05: at 0.05 most units die (output 0 for "
    "every example, so their gradient is 0 forever) and accuracy collapses.",
    "dead_fraction per layer over steps (a heatmap layer x step) of the two runs, and loss over steps",
    (
        Claim("at lr 0.05 the verdict is dead_units, with more than half the hidden units dead (mean over layers)",
              every(verdict("0.05", "dead_units"), above("0.05", "dead_fraction_mean", 0.5))),
        Claim("at lr 0.01 fewer than 30% are dead and accuracy passes 90%",
              every(below("0.01", "dead_fraction_mean", 0.3), above("0.01", "final_accuracy", 0.9))),
        Claim("the dead net ends with the lower accuracy", less("final_accuracy", "0.05", "0.01")),
    ),
)

CNN_CHANNELS = Lesson(
    "cnn-channels",
    "Dead channels in a CNN, and BatchNorm2d",
    "A 6-block ReLU CNN on coloured bars, Adam at lr 0.05: without norm whole channels die (a feature map "
    "that is 0 for every image) until a layer is all dead; BatchNorm2d re-centres every channel and none die.",
    "dead_fraction per conv block over steps (a unit is a channel), and accuracy, of the two runs",
    (
        Claim("without norm: dead_units, more than half the channels dead and one block entirely dead",
              every(verdict("none", "dead_units"), above("none", "dead_fraction_mean", 0.5),
                    above("none", "dead_fraction_max", 0.99))),
        Claim("with batchnorm no block has a fifth of its channels dead", below("batchnorm", "dead_fraction_max", 0.2)),
        Claim("with batchnorm accuracy passes 80%; without it stays below 30% (chance is 1/6)",
              every(above("batchnorm", "final_accuracy", 0.8), below("none", "final_accuracy", 0.3))),
    ),
)

LESSONS = (VANISHING_SIGMOID, ACTIVATIONS, XAVIER_VS_HE, BATCHNORM_SIGMOID, CLIPPING_RNN, DYING_RELU, CNN_CHANNELS)

# The lessons' title, summary and figure in Chinese, for the dashboard's `?lang=zh`: the lessons came from a
# Chinese-language introduction. Metric names stay as the API spells them.
CHINESE = {
    "vanishing-sigmoid": (
        "梯度消失：穿过 20 层的 sigmoid",
        "一个使用 Xavier 初始化的 20 层 sigmoid MLP：梯度在反向传播中每层缩小约 4 倍，最前面的层只得到最后一层约"
        " 1e-12 的梯度，网络什么也学不到。",
        "第 0 步的梯度流图（各层 grad_norm 与 act_grad_norm 随深度的变化，对数坐标）：一条每层下降约 0.6"
        " 个数量级的直线，与理论预测重合",
    ),
    "activations": (
        "激活函数对照：ReLU、Leaky ReLU、sigmoid、tanh、GELU、Swish",
        "同一个使用 He 初始化的 20 层网络换用六种激活函数：只有 sigmoid 的梯度彻底消失；Swish/SiLU 的梯度衰减约"
        " 100 倍，其余的都能传到第一层。",
        "按第 0 步梯度比和最终损失着色的扫描网格；六次运行第 0 步 act_grad_norm 曲线的叠加",
    ),
    "xavier-vs-he": (
        "Xavier 与 He 初始化：配 ReLU 与配 tanh",
        "He 初始化让 20 层 ReLU 网络的梯度保持在原有量级，而 Xavier 初始化使梯度的平方每层减半；Xavier 适合"
        " tanh，He 初始化则让 tanh 的梯度朝输入方向增大。",
        "四次运行第 0 步的梯度流图（各层 act_grad_norm，对数坐标）及理论预测；按第 0 步梯度比着色的网格",
    ),
    "batchnorm-sigmoid": (
        "批归一化拯救深层 sigmoid 网络",
        "同一个 20 层 sigmoid 网络，不加与加批归一化（BatchNorm）：不加时梯度消失，准确率停在随机猜测的水平；"
        "加上后每一层都能得到梯度，网络学会了识别数字。",
        "两次运行第 0 步的梯度流图，以及准确率随训练步数的变化",
    ),
    "clipping-rnn": (
        "梯度裁剪驯服梯度爆炸的 RNN",
        "一个循环权重谱半径约为 1.2 的 tanh RNN：不裁剪时梯度范数增长约 1e18 倍，损失变成 NaN；按范数 1"
        " 裁剪后，它能训练到有限的损失。",
        "两次运行的 total_grad_norm 与损失随步数的变化，并标出被裁剪的步；逐时间步的梯度（time_grad_norm）",
    ),
    "dying-relu": (
        "学习率过大导致 ReLU 死亡",
        "同一个 ReLU 网络分别用学习率 0.01 和 0.05 的 Adam 训练：在 0.05 下大多数单元死亡（对每个样本都输出"
        " 0，梯度从此永远为 0），准确率崩溃。",
        "两次运行各层 dead_fraction 随步数的变化（层 × 步热力图），以及损失随步数的变化",
    ),
    "cnn-channels": (
        "CNN 中的死亡通道与 BatchNorm2d",
        "一个 6 块的 ReLU CNN 在彩色条纹图像上用学习率 0.05 的 Adam 训练：不加归一化时整个通道死亡（对每张图像"
        "都为 0 的特征图），直到某一层全部死亡；BatchNorm2d 让每个通道重新居中，没有通道死亡。",
        "两次运行各卷积块 dead_fraction 随步数的变化（一个单元即一个通道），以及准确率",
    ),
}
