"""The words of the diagnosis in English and Simplified Chinese: every verdict's title and explanation,
every reason and every piece of advice, as templates with named numbers.

The rules (shared/diagnosis.py) name a text and its numbers; the words are chosen here, per
language, when the text is shown. Numbers are formatted once, the same way for every
language (3 significant figures), so an English and a Chinese answer show the same figures.
Spec values (`init: orthogonal`, `norm: batchnorm`) stay as the spec spells them: they are
what a reader types back.
"""

import math
from dataclasses import dataclass, field
from typing import Any

LANGUAGES = ("en", "zh")
DEFAULT = "en"


@dataclass(frozen=True)
class Text:
    """A text of the catalogue by name, with the values of its placeholders."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)


# The step-0 ratios of the first hidden layer to the last, which several reasons open with.
_RATIOS = {
    "en": "at step 0 the first hidden layer's weight gradient is {grad}x the last hidden layer's, "
          "and the backpropagated signal {signal}x",
    "zh": "第 0 步时，第一个隐藏层的权重梯度是最后一个隐藏层的 {grad} 倍，反向传播信号是 {signal} 倍",
}
_TIME = {
    "en": "the gradient at the first time step's hidden state is {step0}x that at the last at step 0, "
          "and {final}x at the last traced step",
    "zh": "第 0 步时，第一个时间步隐藏状态上的梯度是最后一个时间步的 {step0} 倍，在最后一个记录步是 {final} 倍",
}
_CLIP = 'clipping: {{"mode": "norm", "threshold": 1.0}}'

TEXTS: dict[str, dict[str, str]] = {
    # --- reasons
    "diverged_at": {"en": "the loss became NaN or infinite at step {step}",
                    "zh": "损失在第 {step} 步变成了 NaN 或无穷大"},
    "growth_before": {"en": "the global gradient norm grew {growth}x before that",
                      "zh": "在此之前，全局梯度范数增长了 {growth} 倍"},
    "dead": {"en": "at the end {mean}% of hidden units (mean over layers) output zero or less for every example; "
                   "the worst layer has {worst}% dead",
             "zh": "训练结束时，平均每层有 {mean}% 的隐藏单元对所有样本的输出都小于或等于零；"
                   "最严重的一层有 {worst}% 的单元已经死亡"},
    "saturated": {"en": "{share}% of hidden {activation} activations sit where the derivative is below 1% of its "
                        "maximum: the gradient cannot pass them",
                  "zh": "{share}% 的隐藏层 {activation} 激活值落在导数不到其最大值 1% 的饱和区：梯度无法穿过它们"},
    "ratios": {"en": _RATIOS["en"], "zh": _RATIOS["zh"]},
    "ratios_grow": {"en": _RATIOS["en"] + ": the gradient grows on its way back to the input",
                    "zh": _RATIOS["zh"] + "：梯度在反向传回输入的途中不断增大"},
    "ratios_shrink": {"en": _RATIOS["en"] + ": the signal shrinks about {per_layer}x per layer on its way back",
                      "zh": _RATIOS["zh"] + "：反向传播时信号每经过一层约被除以 {per_layer}"},
    "ratios_reach": {"en": _RATIOS["en"] + ": the gradient reaches every layer",
                     "zh": _RATIOS["zh"] + "：梯度能够到达每一层"},
    "time_grow": {"en": _TIME["en"] + ": the gradient grows on its way back through time",
                  "zh": _TIME["zh"] + "：梯度沿时间反向传播时不断增大"},
    "time_fade": {"en": _TIME["en"] + ": the gradient fades on its way back through time, so early inputs "
                                      "cannot be learned",
                  "zh": _TIME["zh"] + "：梯度沿时间反向传播时逐渐消失，模型因此学不到较早的输入"},
    "growth_during": {"en": "the global gradient norm grew {growth}x during training",
                      "zh": "训练过程中全局梯度范数增长了 {growth} 倍"},
    "final_ratio": {"en": "at the last traced step the weight-gradient ratio is {ratio}",
                    "zh": "在最后一个记录步，这一权重梯度之比为 {ratio}"},
    "loss": {"en": "the loss went from {first} to {last}", "zh": "损失从 {first} 变为 {last}"},
    "clipped": {"en": "clipping changed the gradient on {share}% of traced steps (median gradient norm {median}, "
                      "threshold {threshold})",
                "zh": "梯度裁剪在 {share}% 的记录步上改变了梯度（梯度范数的中位数为 {median}，阈值为 {threshold}）"},
    # --- advice
    "smaller_lr": {"en": "lower the learning rate (try lr {lr})", "zh": "降低学习率（可试 lr {lr}）"},
    "smaller_lr_dead": {"en": "lower the learning rate (try lr {lr}): large updates push units into the dead zone",
                        "zh": "降低学习率（可试 lr {lr}）：过大的更新会把单元推进死区"},
    "clip_norm": {"en": f"clip gradients by norm ({_CLIP})", "zh": f"按范数做梯度裁剪（{_CLIP}）"},
    "batchnorm": {"en": "add normalization (norm: batchnorm)", "zh": "加入批归一化（norm: batchnorm）"},
    "orthogonal": {"en": "use init: orthogonal", "zh": "使用正交初始化（init: orthogonal）"},
    "leaky_relu": {"en": "use leaky_relu (or elu/gelu), whose gradient is never exactly zero",
                   "zh": "改用 leaky_relu（或 elu/gelu），它们的梯度永远不会恰好为零"},
    "kaiming_dead": {"en": "use kaiming_normal initialization (zero biases)",
                     "zh": "使用 He 初始化（init: kaiming_normal，偏置置零）"},
    "xavier": {"en": "use xavier initialization: it keeps pre-activations in the activation's linear range",
               "zh": "使用 Xavier 初始化：它让预激活值保持在激活函数的线性区内"},
    "batchnorm_before": {"en": "add normalization before the activation (norm: batchnorm)",
                         "zh": "在激活函数之前加入批归一化（norm: batchnorm）"},
    "or_relu": {"en": "or switch to relu with kaiming initialization",
                "zh": "或者改用 ReLU，并配合 He（kaiming）初始化"},
    "matched_init": {"en": "use an initialization that keeps the signal's scale: xavier for tanh/sigmoid, "
                           "kaiming for ReLU",
                     "zh": "使用能保持信号尺度的初始化：tanh/sigmoid 用 Xavier 初始化，ReLU 用 He（kaiming）初始化"},
    "recurrent_init": {"en": "use a smaller or orthogonal recurrent initialization (init: orthogonal)",
                       "zh": "循环权重改用更小的或正交的初始化（init: orthogonal）"},
    "gated_cell": {"en": "use an lstm or gru cell, whose gates can carry the gradient across time steps",
                   "zh": "改用 LSTM 或 GRU 单元（cell: lstm 或 gru），它们的门控能让梯度跨越多个时间步传递"},
    "orthogonal_gain": {"en": "use orthogonal initialization (init: orthogonal), which keeps the recurrent gain "
                              "near 1",
                        "zh": "使用正交初始化（init: orthogonal），让循环增益保持在 1 附近"},
    "shorter_sequences": {"en": "use shorter sequences", "zh": "缩短序列长度"},
    "relu_kaiming": {"en": "use relu (or another ReLU-family activation) with kaiming initialization",
                     "zh": "改用 ReLU（或其他 ReLU 类激活函数），并配合 He（kaiming）初始化"},
    "batchnorm_or_residual": {"en": "add normalization (norm: batchnorm) or residual connections (residual: true)",
                              "zh": "加入批归一化（norm: batchnorm）或残差连接（residual: true）"},
    "fewer_layers": {"en": "use fewer layers", "zh": "减少网络层数"},
    "stalled": {"en": "the loss barely moved: try a larger learning rate, adam, or more steps",
                "zh": "损失几乎没有下降：可以试试更大的学习率、Adam 优化器或更多的训练步数"},
    "clip_too_low": {"en": "the clipping threshold sits below the usual gradient norm: it acts as a smaller "
                           "learning rate; raise it if training is slow",
                     "zh": "裁剪阈值低于通常的梯度范数，相当于变相降低了学习率；如果训练太慢，请调高阈值"},
}

# Per verdict: a title and what it means, for a reader who has not met the word before.
VERDICTS: dict[str, dict[str, tuple[str, str]]] = {
    "healthy": {
        "en": ("Healthy", "The gradient reaches every layer at a usable scale, and nothing in the traces points "
                          "to a failure."),
        "zh": ("健康", "梯度以合适的量级到达每一层，轨迹中没有训练失败的迹象。"),
    },
    "vanishing": {
        "en": ("Vanishing gradients", "The gradient shrinks layer by layer (or time step by time step) on its way "
                                      "back to the input, so the layers near the input barely learn."),
        "zh": ("梯度消失", "梯度在反向传播回输入的过程中逐层（或逐个时间步）衰减，靠近输入的层几乎学不到东西。"),
    },
    "exploding": {
        "en": ("Exploding gradients", "The gradient grows layer by layer (or through time) on its way back, so "
                                      "the updates become too large and training turns unstable."),
        "zh": ("梯度爆炸", "梯度在反向传播中逐层（或随时间步）不断增大，参数更新过大，训练变得不稳定。"),
    },
    "dead_units": {
        "en": ("Dead units", "Many hidden ReLU units output zero for every input; their gradient is exactly zero, "
                             "so they stop learning and do not come back."),
        "zh": ("神经元死亡", "大量隐藏层 ReLU 单元对任何输入都输出零（即“ReLU 死亡”）：它们的梯度恒为零，"
                          "因而停止学习，再也无法恢复。"),
    },
    "saturated": {
        "en": ("Saturated activations", "Most sigmoid or tanh units sit in the flat tails of the activation, "
                                        "where its derivative is almost zero and the gradient cannot pass."),
        "zh": ("激活饱和", "大多数 sigmoid 或 tanh 单元落在激活函数平坦的两端（饱和区），导数几乎为零，梯度无法通过。"),
    },
    "diverged": {
        "en": ("Diverged", "The loss became NaN or infinite: the updates were too large and training blew up."),
        "zh": ("训练发散", "损失变成了 NaN 或无穷大：参数更新过大，训练发散了。"),
    },
}
# What a number that could not be measured reads as.
MISSING = {"en": "n/a", "zh": "无"}


def number(value: Any, lang: str = DEFAULT) -> str:
    """A value as the texts show it: 3 significant figures for a float, integers and words as they are."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING[lang]
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def render(text: Text, lang: str = DEFAULT) -> str:
    """The text in a language of LANGUAGES, its numbers filled in."""
    template = TEXTS[text.key][lang]
    return template.format(**{name: number(value, lang) for name, value in text.params.items()})


def verdict_text(verdict: str, lang: str = DEFAULT) -> tuple[str, str]:
    """A verdict's title and explanation."""
    return VERDICTS[verdict][lang]
