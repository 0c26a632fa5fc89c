// The dashboard's own labels in English and Chinese: the one catalog the page reads (window.gradtraceI18n).
// The language: ?lang=en|zh, else the browser's Accept-Language (navigator.languages); English by default.
// Diagnosis texts come from the API in the language it answers with; these are only the page's labels.
(function () {
  const catalog = {
    en: {
      "nav.experiments": "Experiments", "nav.docs": "API docs", "nav.other": "中文",
      "token.label": "API token", "token.save": "Save", "token.forget": "Forget token",
      "token.needed": "This service needs an API token: enter it above (it is kept in this browser only).",
      "lessons.title": "Lessons", "lessons.run": "Run this lesson", "lessons.none": "No lessons found.",
      "submit.title": "New experiment", "submit.button": "Submit", "submit.invalid": "The spec was refused:",
      "submit.clipping_off": "off", "submit.default": "default",
      "list.title": "Experiments", "list.filter": "Filter", "list.status": "Status", "list.all": "all",
      "list.empty": "No experiments yet.", "list.sweeps": "Sweeps", "list.no_sweeps": "No sweeps yet.", "list.size": "runs",
      "col.id": "id", "col.name": "name", "col.status": "status", "col.verdict": "verdict", "col.arch": "arch",
      "col.depth": "depth", "col.width": "width", "col.activation": "activation", "col.init": "init",
      "col.norm": "norm", "col.steps": "steps", "col.progress": "progress", "col.loss": "final loss",
      "exp.title": "Experiment", "exp.progress": "step {step} of {steps}", "exp.live": "live: updating",
      "exp.diagnosis": "Diagnosis", "exp.reasons": "Why", "exp.advice": "What to try",
      "exp.suggested": "Run the suggested fix", "exp.no_summary": "No diagnosis yet: the run has not finished.",
      "exp.error": "The run failed:", "exp.steps_shown": "Steps shown (comma-separated)",
      "plot.heatmap": "log10 gradient norm, layer × step", "plot.flow": "Gradient flow through depth",
      "plot.flow_theory": "theory at step {step}", "plot.step": "step", "plot.layer": "layer",
      "plot.depth": "layer (input side first)", "plot.grad_norm": "weight-gradient norm",
      "plot.signal": "backpropagated signal (act_grad_norm)", "plot.signal_theory": "theory",
      "plot.loss": "Loss and accuracy", "plot.loss_axis": "loss", "plot.accuracy": "accuracy",
      "plot.dead": "Dead units, share per layer", "plot.saturated": "Saturated activations, share per layer",
      "plot.clipping": "Total gradient norm and clipping events", "plot.total": "total gradient norm",
      "plot.clipped": "clipped", "plot.clip_count": "{count} of {total} traced steps clipped",
      "plot.time": "Gradient through time (RNN): log10 ‖∂L/∂h_t‖", "plot.time_axis": "time step",
      "plot.theory_note": "Dashed: mean-field prediction at initialization, scaled to the last hidden layer.",
      "plot.no_theory": "No theory line: {note}",
      "sweep.title": "Sweep", "sweep.ratio": "log10 step-0 gradient ratio (first/last hidden layer)",
      "sweep.loss": "Final loss", "sweep.verdict": "Verdict", "sweep.profiles": "Per-layer gradient norm at step 0, every run",
      "sweep.counts": "Status", "sweep.runs": "Runs",
      "status.queued": "queued", "status.running": "running", "status.succeeded": "succeeded",
      "status.failed": "failed", "status.cancelled": "cancelled", "status.finished": "finished",
      "error.load": "Could not load: {message}"
    },
    zh: {
      "nav.experiments": "实验", "nav.docs": "API 文档", "nav.other": "English",
      "token.label": "API 令牌", "token.save": "保存", "token.forget": "清除令牌",
      "token.needed": "此服务需要 API 令牌：请在上方输入（只保存在本浏览器中）。",
      "lessons.title": "课程", "lessons.run": "运行此课程", "lessons.none": "没有找到课程。",
      "submit.title": "新建实验", "submit.button": "提交", "submit.invalid": "规格被拒绝：",
      "submit.clipping_off": "关闭", "submit.default": "默认",
      "list.title": "实验列表", "list.filter": "筛选", "list.status": "状态", "list.all": "全部",
      "list.empty": "还没有实验。", "list.sweeps": "参数扫描", "list.no_sweeps": "还没有参数扫描。", "list.size": "次运行",
      "col.id": "编号", "col.name": "名称", "col.status": "状态", "col.verdict": "诊断", "col.arch": "结构",
      "col.depth": "深度", "col.width": "宽度", "col.activation": "激活函数", "col.init": "初始化",
      "col.norm": "归一化", "col.steps": "步数", "col.progress": "进度", "col.loss": "最终损失",
      "exp.title": "实验", "exp.progress": "第 {step} 步，共 {steps} 步", "exp.live": "实时更新中",
      "exp.diagnosis": "诊断", "exp.reasons": "原因", "exp.advice": "建议",
      "exp.suggested": "运行建议的修正", "exp.no_summary": "尚无诊断：运行还没有结束。",
      "exp.error": "运行失败：", "exp.steps_shown": "显示的步（逗号分隔）",
      "plot.heatmap": "梯度范数的 log10，层 × 步", "plot.flow": "梯度随深度的流动",
      "plot.flow_theory": "第 {step} 步的理论值", "plot.step": "步", "plot.layer": "层",
      "plot.depth": "层（从输入端开始）", "plot.grad_norm": "权重梯度范数",
      "plot.signal": "反向传播信号（act_grad_norm）", "plot.signal_theory": "理论",
      "plot.loss": "损失与准确率", "plot.loss_axis": "损失", "plot.accuracy": "准确率",
      "plot.dead": "死亡单元比例（每层）", "plot.saturated": "饱和激活比例（每层）",
      "plot.clipping": "总梯度范数与裁剪事件", "plot.total": "总梯度范数",
      "plot.clipped": "已裁剪", "plot.clip_count": "{total} 个记录步中有 {count} 步被裁剪",
      "plot.time": "随时间的梯度（RNN）：log10 ‖∂L/∂h_t‖", "plot.time_axis": "时间步",
      "plot.theory_note": "虚线：初始化时的平均场理论预测，按最后一个隐藏层缩放。",
      "plot.no_theory": "没有理论曲线：{note}",
      "sweep.title": "参数扫描", "sweep.ratio": "第 0 步梯度比的 log10（第一层/最后隐藏层）",
      "sweep.loss": "最终损失", "sweep.verdict": "诊断", "sweep.profiles": "所有运行在第 0 步的每层梯度范数",
      "sweep.counts": "状态", "sweep.runs": "运行",
      "status.queued": "排队中", "status.running": "运行中", "status.succeeded": "成功",
      "status.failed": "失败", "status.cancelled": "已取消", "status.finished": "已结束",
      "error.load": "无法加载：{message}"
    }
  };

  function pickLanguage() {
    const asked = new URLSearchParams(window.location.search).get("lang");
    if (asked && catalog[asked]) return asked;
    const preferred = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
    for (const tag of preferred) {
      const base = String(tag).toLowerCase().split("-")[0];
      if (catalog[base]) return base;
    }
    return "en";
  }

  const lang = pickLanguage();
  function t(key, vars) {
    const text = (catalog[lang] && catalog[lang][key]) || catalog.en[key] || key;
    return text.replace(/\{(\w+)\}/g, (_, name) => (vars && name in vars ? String(vars[name]) : ""));
  }
  window.gradtraceI18n = { catalog, lang, t };
})();
