"""Quantization-aware fine-tuning: a model whose ONNX Runtime INT8 export agrees with it.

Post-training INT8 of every layer of the MobileNetV3 default flipped 0.27% of labels (all near
p=0.5), 0.05-0.15% with the high-resolution front kept in fp32 (depending on the calibration
faces). This fine-tunes a trained model while
simulating in torch what export's ONNX Runtime quantization will do, so the network learns
weights that tolerate it:

- BatchNorm is folded into the convolutions first (ONNX Runtime quantizes the folded weights).
- Weights: per-output-channel symmetric int8 on ONNX Runtime's reduce_range grid [-64, 64],
  scale = max|w| / 64. The saved weights lie on that grid, so quantizing them loses nothing.
- Activations: per-tensor uint8 with ONNX Runtime's scale/zero-point rule, at the same points
  its QDQ quantizer puts them (input, conv outputs after a fused ReLU, hard-sigmoid, the products
  inside hard-swish and squeeze-excitation, residual sums, pooling, linear outputs; 127 points
  on MobileNetV3-Small, as many as ONNX Runtime inserts), with ranges from the same symmetric
  percentile histogram on the same calibration faces, so the ranges match ONNX Runtime's to
  within 0.1%. With export's fp32 front (float_stride, default 8) those layers' tensors stay
  unquantized here too (107 points; the counts match ONNX Runtime's at every stride, tested).
  The residual gap to ONNX Runtime is about half the quantization noise itself, and pinning
  ONNX Runtime to the simulated scales does not shrink it: float sums in a different order
  round a few values the other way, and those differences propagate.
- Each step runs the batch with and without activation quantization; the loss is both branches'
  cross-entropy plus a consistency term on their calibrated logit margins, so labels agree.

The result is a plain model folder of the same architecture (BatchNorm set to the identity, the
folded bias in its shift), so everything else loads it unchanged.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FaceGenderError, require
from ..infer.export import in_float_front
from ..io.progress import progress_bar
from ..io.targets import as_inputs, folder_target
from ..options import build, signature, to_recipe
from ..verbs import QatOptions
from .data import train_val_sets
from .recipe import Recipe, TrainResult, calibrate_on_val, command_line, predict_logits, write_history

torch = require("torch")
nn = torch.nn
F = torch.nn.functional

# ONNX Runtime's reduce_range int8 weight grid (quant_utils.ONNX_INT_TYPE_REDUCED_RANGE) and
# uint8 activation range; export quantizes with these.
W_QMIN, W_QMAX = -64, 64
A_QMIN, A_QMAX = 0, 255
PERCENTILE = 99.99  # = export._PERCENTILE
_BINS = 2048  # ONNX Runtime's default histogram size for Percentile calibration


class WeightQuant(nn.Module):
    """Parametrization: weight -> its per-output-channel int8 (reduce_range) fake-quantized value."""

    def forward(self, w):
        absmax = w.detach().abs().flatten(1).amax(1)
        # ONNX Runtime uses scale 1.0 for an all-zero channel; any positive scale keeps zeros zero.
        scale = torch.where(absmax > 0, absmax / W_QMAX, torch.ones_like(absmax)).float()
        zp = torch.zeros_like(scale, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, W_QMIN, W_QMAX)


class ActQuant(nn.Module):
    """One activation quantization point: observes ranges, then fake-quantizes (or passes)."""

    def __init__(self):
        super().__init__()
        self.mode = "off"  # "off" | "range" | "histogram" (calibration passes) | "quant"
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self._reset()

    def _reset(self) -> None:
        self._hist: np.ndarray | None = None
        self._min = np.float32(np.inf)  # of x
        self._max = np.float32(-np.inf)
        self._abs_min = np.float32(np.inf)  # of |x|: the histogram's range
        self._abs_max = np.float32(-np.inf)

    def forward(self, x):
        if self.mode == "quant":
            return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point,
                                                         A_QMIN, A_QMAX)
        if self.mode in ("range", "histogram"):
            a = x.detach().float().flatten().numpy()
            if self.mode == "range":
                self._min, self._max = min(self._min, a.min()), max(self._max, a.max())
                a = np.abs(a)
                self._abs_min = min(self._abs_min, a.min())
                self._abs_max = max(self._abs_max, a.max())
            else:
                hist, _ = np.histogram(np.abs(a), bins=_BINS,
                                       range=(self._abs_min, self._abs_max))
                self._hist = hist if self._hist is None else self._hist + hist
        return x

    def finish_observing(self, percentile: float = PERCENTILE) -> None:
        """Scale and zero point as ONNX Runtime derives them (symmetric Percentile calibration,
        then quant_utils.compute_scale_zp for uint8). Its calibrator histograms |x| of all
        calibration batches at once, 2048 bins from min |x| to max |x|; the "range" pass finds
        those bounds, so the "histogram" pass can add up the same bins batch by batch."""
        if self._hist is None:
            raise FaceGenderError("quantization point saw no data during calibration")
        edges = np.histogram_bin_edges(np.array([self._abs_min, self._abs_max]), bins=_BINS,
                                       range=(self._abs_min, self._abs_max)).astype(np.float32)
        cdf = np.cumsum(self._hist / self._hist.sum())
        threshold = edges[np.searchsorted(cdf, percentile / 100.0)]
        lo, hi = max(-threshold, self._min), min(threshold, self._max)
        rmin, rmax = min(lo, np.float32(0)), max(hi, np.float32(0))
        scale = (np.float64(rmax) - np.float64(rmin)) / (A_QMAX - A_QMIN)
        if np.float32(scale) < np.finfo(np.float32).tiny:
            scale, zero_point = 1.0, 0
        else:
            zero_point = int(np.round(A_QMIN - rmin / scale))
        self.scale.fill_(float(np.float32(scale)))
        self.zero_point.fill_(zero_point)
        self._reset()


class QuantHardswish(nn.Module):
    """hard-swish as ONNX Runtime's graph optimiser rewrites it: x * HardSigmoid(x), each output
    quantized."""

    def __init__(self):
        super().__init__()
        self.q_gate = ActQuant()
        self.q_out = ActQuant()

    def forward(self, x):
        return self.q_out(x * self.q_gate(F.hardsigmoid(x)))


def _conv_bn_pairs(model: nn.Module):
    """(Sequential's name, Sequential, conv key, BatchNorm key) for each conv -> BatchNorm2d."""
    for name, seq in model.named_modules():
        if isinstance(seq, nn.Sequential):
            keys = list(seq._modules)
            for a, b in zip(keys, keys[1:], strict=False):
                if isinstance(seq._modules[a], nn.Conv2d) and \
                        isinstance(seq._modules[b], nn.BatchNorm2d):
                    yield name, seq, a, b


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm that follows a conv in a Sequential into the conv (eval statistics);
    the BatchNorm becomes an Identity. Raises when a BatchNorm is left that cannot be folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for _, seq, a, b in list(_conv_bn_pairs(model)):
        seq._modules[a] = fuse_conv_bn_eval(seq._modules[a], seq._modules[b])
        seq._modules[b] = nn.Identity()
    left = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise FaceGenderError("quantization-aware fine-tuning needs every BatchNorm right after a "
                              f"convolution in a Sequential; cannot fold {', '.join(left[:3])}")
    return model


_QUANT_AFTER_MODULES = (nn.Conv2d, nn.Linear, nn.ReLU, nn.Hardsigmoid, nn.Sigmoid,
                        nn.AdaptiveAvgPool2d)
_QUANT_AFTER_FUNCTIONS = (operator.add, operator.iadd, operator.mul, operator.imul, torch.add,
                          torch.mul, F.relu, F.adaptive_avg_pool2d, F.hardsigmoid)


def prepare(model: nn.Module, float_stride: int = 0, input_size: int = 0) -> nn.Module:
    """fold BN -> trace -> insert ActQuant after each quantized tensor, WeightQuant on weights.

    float_stride / input_size: leave unquantized the tensors export keeps in fp32
    (export.float_nodes: ops whose output stride is <= float_stride, with their inputs unless
    another consumer is quantized). Returns a torch.fx GraphModule; set_mode() switches its
    activation quantization."""
    from torch import fx
    from torch.fx.passes.shape_prop import ShapeProp
    from torch.nn.utils import parametrize

    model = fold_batchnorm(model)
    for m in list(model.modules()):  # hard-swish decomposed; dropout off (see below)
        for child_name, child in list(m.named_children()):
            if isinstance(child, nn.Hardswish):
                setattr(m, child_name, QuantHardswish())
            elif isinstance(child, nn.Dropout):
                # Both branches of a step must see the same network, so no dropout while tuning.
                setattr(m, child_name, nn.Identity())

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return isinstance(m, QuantHardswish) or super().is_leaf_module(m, qualname)

    try:
        graph = Tracer().trace(model)
    except Exception as exc:  # data-dependent control flow and the like
        raise FaceGenderError(f"quantization-aware fine-tuning cannot trace this model with "
                              f"torch.fx ({type(exc).__name__}: {str(exc)[:200]})") from None
    gm = fx.GraphModule(model, graph)
    # Identity (ex-BatchNorm, ex-Dropout) nodes go, so a conv's users are seen directly.
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), nn.Identity):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)

    res: dict = {}
    if float_stride:
        if input_size <= 0:
            raise ValueError("prepare(): float_stride needs the model's input_size")
        ShapeProp(gm).propagate(torch.zeros(1, 3, input_size, input_size))
        for node in gm.graph.nodes:  # the feature-map side each op works at, as export sees it
            shape = getattr(node.meta.get("tensor_meta"), "shape", ())
            first = next((a for a in node.args if isinstance(a, fx.Node)), None)
            res[node] = shape[2] if len(shape) == 4 and shape[2] > 1 else \
                res.get(first, input_size)

    def in_float(n) -> bool:
        return in_float_front(res.get(n, input_size), input_size, float_stride)

    def is_relu(n) -> bool:
        return (n.op == "call_module" and isinstance(gm.get_submodule(n.target), nn.ReLU)) or \
            (n.op == "call_function" and n.target is F.relu)

    count = 0
    for node in list(gm.graph.nodes):
        if node.op == "placeholder":
            quant = True
        elif node.op == "call_module":
            mod = gm.get_submodule(node.target)
            quant = isinstance(mod, _QUANT_AFTER_MODULES)
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and node.users and \
                    all(is_relu(u) for u in node.users):
                quant = False  # ONNX Runtime fuses Conv+Relu and quantizes after the ReLU
        elif node.op == "call_function":
            quant = node.target in _QUANT_AFTER_FUNCTIONS
        else:
            quant = False
        # ONNX Runtime quantizes a tensor when its producer or a consumer is quantized.
        float_out = in_float(node) and all(in_float(u) for u in node.users)
        if node.op == "call_module" and in_float(node) and \
                isinstance(hs := gm.get_submodule(node.target), QuantHardswish):
            hs.q_gate = nn.Identity()  # its product is computed in fp32
            if float_out:
                hs.q_out = nn.Identity()
        if not quant or float_out:
            continue
        name = f"actquant_{count}"
        count += 1
        gm.add_module(name, ActQuant())
        with gm.graph.inserting_after(node):
            q = gm.graph.call_module(name, (node,))
        node.replace_all_uses_with(q, delete_user_cb=lambda u, q=q: u is not q)
    gm.graph.lint()
    gm.recompile()
    for m in gm.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            parametrize.register_parametrization(m, "weight", WeightQuant())
    return gm


def act_quants(model: nn.Module) -> list[ActQuant]:
    return [m for m in model.modules() if isinstance(m, ActQuant)]


def set_mode(model: nn.Module, mode: str) -> None:
    for q in act_quants(model):
        q.mode = mode


def observe_ranges(model: nn.Module, batches: Sequence) -> None:
    """Activation ranges from `batches` of preprocessed faces, as ONNX Runtime's calibrator
    computes them from the same faces (two passes: value ranges, then histograms)."""
    model.eval()
    with torch.inference_mode():
        for mode in ("range", "histogram"):
            set_mode(model, mode)
            for x in batches:
                model(x)
    for q in act_quants(model):
        q.finish_observing()
    set_mode(model, "quant")


def unfold_into(prepared: nn.Module, original: nn.Module) -> dict[str, Any]:
    """State dict for `original`'s architecture carrying `prepared`'s quantized weights.

    Folded convs keep their grid weights; each BatchNorm becomes the identity with the folded
    bias as its shift (running_var = 1 - eps, so var + eps = 1)."""
    state = {k: v.clone() for k, v in original.state_dict().items()}
    qmods = dict(prepared.named_modules())
    for name, seq, a, b in _conv_bn_pairs(original):
        bn, prefix = seq._modules[b], f"{name}.{b}." if name else f"{b}."
        state[prefix + "weight"] = torch.ones_like(bn.weight)
        state[prefix + "bias"] = qmods[f"{name}.{a}" if name else a].bias.detach().clone()
        state[prefix + "running_mean"] = torch.zeros_like(bn.running_mean)
        state[prefix + "running_var"] = torch.full_like(bn.running_var, 1.0 - bn.eps)
    for name, mod in original.named_modules():  # every conv / linear: its grid weights
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and name in qmods and name + ".weight" in state:
            q = qmods[name]
            state[name + ".weight"] = q.weight.detach().clone()  # parametrized: the grid value
            if mod.bias is not None:
                state[name + ".bias"] = q.bias.detach().clone()
    return state


def to_original(prepared: nn.Module, arch: str, num_classes: int) -> nn.Module:
    """A fresh `arch` model holding the fine-tuned, quantization-ready weights."""
    from ..models.registry import build_model

    net = build_model(arch, num_classes)
    net.load_state_dict(unfold_into(prepared, net))
    return net.eval()



def finetune(model: Any, data: Any, out: Any, *, export_formats: Sequence[str] | None = None,
             **options: Any) -> TrainResult:
    """Quantization-aware fine-tuning of a model folder; writes a new model folder to `out`.

    Options (defaults, ranges) are declared once in facegender.verbs.QatOptions; this
    signature is built from it. `data` supplies training faces (its 'train' split when it has
    one) and the calibration faces; `val` (default: the source's own val split) picks nothing but
    is used to re-fit the temperature and unsure band and to report accuracy and int8 agreement
    per epoch. The new folder is then exported (`export`: ONNX + INT8, or `export_formats`) with
    parity checks (see facegender.export). `consistency` weighs the agreement term: the mean
    squared difference of the calibrated logit margins with and without activation
    quantization. Activation ranges are re-calibrated every `recalibrate_every` steps (0 or
    None: once per epoch) and after each epoch. `float_stride` is the INT8 export's fp32 front
    (export.float_nodes), left unquantized in the simulation too.
    Returns a TrainResult (its `export` holds the exported files' figures).
    """
    opts = build(QatOptions, {"model": model, "data": data, "out": out, **options}, "finetune")
    if export_formats is None:
        export_formats = ("onnx", "int8") if opts.export else ()
    return QatRecipe(opts, tuple(export_formats)).run()


finetune.__signature__ = signature(finetune, QatOptions,  # type: ignore[attr-defined]
                                   leading=("model", "data", "out"),
                                   trailing={"export_formats": None})


class QatRecipe(Recipe):
    """setup: the source model, prepared for simulated INT8, and its faces; fit: each step
    trains both branches and their agreement, ranges re-observed as the weights move; finish:
    re-fit the temperature, save, export."""

    def __init__(self, opts: QatOptions, export_formats: tuple[str, ...]) -> None:
        self.o, self.export_formats = opts, export_formats
        self.out = folder_target(opts.out, "model folder", as_inputs(opts.data))  # before any work
        self.skipped: dict[str, str] = {}
        self.last_fp: dict = {}  # val logits of the latest fp32 pass: the final calibration

    def setup(self) -> None:
        import copy

        from ..infer.export import calibration_faces
        from ..models import modelfile
        from .augment import face_augmentation
        from .torchdata import FaceDataset, default_workers

        o = self.o
        if o.threads:
            torch.set_num_threads(o.threads)
        self.workers = default_workers() if o.workers is None else o.workers
        self.src_dir = modelfile.resolve_model_dir(o.model)
        net, cfg = modelfile.load_torch_model(self.src_dir)
        self.cfg = cfg = copy.deepcopy(cfg)
        self.sets = train_val_sets(o.data, o.val, limit=o.limit, val_limit=o.val_limit,
                                   val_fraction=None, seed=o.seed)
        # The very faces, batches and order export's INT8 calibration uses: the simulated ranges
        # then are the ones ONNX Runtime will pick for the final weights.
        self.x_cal = calibration_faces(o.data, cfg, o.calib_size)
        torch.manual_seed(o.seed)
        self.qnet = prepare(copy.deepcopy(net), o.float_stride, cfg.input_size)
        self.val_ds = FaceDataset(self.sets.val, cfg)
        self.train_ds = FaceDataset(self.sets.train, cfg, augment=face_augmentation(o.augment))

    def reobserve_ranges(self) -> None:
        from ..infer.export import calibration_batches

        observe_ranges(self.qnet, [torch.from_numpy(b) for b in calibration_batches(self.x_cal)])

    def margins(self, z):  # calibrated logit margin male - female, what the label is decided on
        m, f = self.cfg.male_index, 1 - self.cfg.male_index
        return (z[:, m] - z[:, f]) / self.cfg.temperature

    def measure(self) -> dict[str, float]:
        """fp32 and simulated-int8 val figures of the current weights, and their agreement."""
        from ..infer.preprocess import softmax

        cfg, qnet = self.cfg, self.qnet
        args = (self.val_ds, self.o.batch_size, self.workers, self.skipped, self.sets.val)
        set_mode(qnet, "off")
        fp = predict_logits(qnet, *args)
        self.last_fp.update(fp)
        set_mode(qnet, "quant")
        q = predict_logits(qnet, *args)
        pf = softmax(fp["logits"], cfg.temperature)[:, cfg.male_index]
        pq = softmax(q["logits"], cfg.temperature)[:, cfg.male_index]
        y = fp["y"] == cfg.male_index
        return {"val_accuracy": float(np.mean((pf >= 0.5) == y)),
                "val_accuracy_int8": float(np.mean((pq >= 0.5) == y)),
                "agreement": float(np.mean((pf >= 0.5) == (pq >= 0.5))),
                "max_abs_dp": float(np.abs(pf - pq).max()),
                "mean_abs_dp": float(np.abs(pf - pq).mean())}

    def fit(self) -> None:
        import math
        import sys

        o = self.o
        self.reobserve_ranges()
        self.history = [{"epoch": 0, "train_loss": None, "consistency": None, **self.measure(),
                         "epoch_seconds": 0.0}]
        print(f"before fine-tuning (simulated int8 vs fp32, {len(self.sets.val)} val faces): "
              f"agreement {self.history[0]['agreement']:.2%}, max|dp| "
              f"{self.history[0]['max_abs_dp']:.3f}", file=sys.stderr)
        params = [p for p in self.qnet.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=0.0)
        steps = o.epochs * math.ceil(len(self.train_ds) / o.batch_size)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, steps)))))
        self.ce = nn.CrossEntropyLoss(
            label_smoothing=self.cfg.recipe.get("label_smoothing", 0.0) or 0.0)
        self.step = 0
        for epoch in range(o.epochs):
            row = self._epoch(epoch)
            self.history.append(row)
            print(f"qat epoch {epoch + 1}/{o.epochs}: loss {row['train_loss']:.4f} consistency "
                  f"{row['consistency']:.4f} | val acc {row['val_accuracy']:.4f} (int8 sim "
                  f"{row['val_accuracy_int8']:.4f}) agreement {row['agreement']:.4f} max|dp| "
                  f"{row['max_abs_dp']:.3f} | {row['epoch_seconds']:.0f} s", file=sys.stderr)
            _save(self.qnet, self.cfg, self.out, self.history)

    def _epoch(self, epoch: int) -> dict[str, Any]:
        import time

        from .torchdata import make_loader

        o, qnet = self.o, self.qnet
        torch.manual_seed(o.seed * 100_003 + epoch)
        qnet.train()
        t0 = time.perf_counter()
        tot = cons_tot = n = 0.0
        loader = make_loader(self.train_ds, o.batch_size, True, self.workers,
                             o.seed * 100_003 + epoch)
        bar = progress_bar(loader, o.progress, f"qat epoch {epoch + 1}/{o.epochs}", unit="batch",
                           leave=False)
        for x, y, _, failed in bar:
            for i, reason in failed:
                self.skipped[self.sets.train[i].ref] = reason
            if x is None:
                continue
            set_mode(qnet, "quant")
            zq = qnet(x)
            set_mode(qnet, "off")
            zf = qnet(x)
            cons = (self.margins(zq) - self.margins(zf)).pow(2).mean()
            loss = self.ce(zq, y) + self.ce(zf, y) + o.consistency * cons
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            if o.recalibrate_every and self.step % o.recalibrate_every == 0:
                # Ranges follow the weights, so the simulated error stays the one ONNX Runtime's
                # calibration of these weights will produce (a small scale change reshuffles
                # which values round up and down).
                self.reobserve_ranges()
                qnet.train()
            tot += loss.item() * len(y)
            cons_tot += cons.item() * len(y)
            n += len(y)
            bar.set_postfix(loss=f"{tot / n:.4f}", cons=f"{cons_tot / n:.4f}")
        seconds = time.perf_counter() - t0
        self.reobserve_ranges()
        return {"epoch": epoch + 1, "train_loss": tot / max(n, 1),
                "consistency": cons_tot / max(n, 1), **self.measure(), "epoch_seconds": seconds}

    def finish(self) -> TrainResult:
        """The fine-tuned fp32 model is what ships: its temperature and unsure band re-fitted on
        val (the last measure() ran exactly these weights without activation quantization)."""
        import shutil

        from ..infer.export import export as export_model
        from ..models import modelfile
        from ..models.card import write_card

        o, cfg, out, src_dir = self.o, self.cfg, self.out, self.src_dir
        final = to_original(self.qnet, cfg.arch, len(cfg.labels))
        source_metrics = cfg.metrics
        cfg.metrics = calibrate_on_val(cfg, self.last_fp)
        # A model fine-tuned again keeps the figures from before its first fine-tuning.
        cfg.metrics["before_qat"] = source_metrics.get("before_qat") or {
            "model": str(src_dir), "val": source_metrics.get("val")}
        previous = cfg.recipe.get("qat")
        cfg.recipe["qat"] = {
            "command": command_line("qat"), "from": str(src_dir),
            "data": self.sets.train_provenance, "val": self.sets.val_provenance,
            **to_recipe(o), "calib_faces": len(self.x_cal),
            "weights": f"int8 per-channel symmetric [{W_QMIN}, {W_QMAX}] (reduce_range)",
            "activations": f"uint8 per-tensor, Percentile {PERCENTILE}",
            "seconds": round(sum(r["epoch_seconds"] for r in self.history), 1)}
        if previous:
            cfg.recipe["qat"]["previous"] = previous
        modelfile.save_weights(final.state_dict(), out)
        modelfile.save_config(cfg, out)
        for name in (modelfile.HISTORY_NAME, "curves.png"):  # the base run's curves stay with it
            if (src_dir / name).exists():
                shutil.copy2(src_dir / name, out / name)
        write_history(self.history, out, QAT_HISTORY_NAME)
        write_card(out, cfg)
        exported = export_model(out, self.export_formats, calib_data=o.data,
                                calib_size=o.calib_size,
                                parity_data=o.val if o.val is not None else o.data,
                                parity_size=len(self.sets.val), float_stride=o.float_stride) \
            if self.export_formats else {}
        best = self.history[-1]
        return TrainResult(out, best["epoch"], best["agreement"], cfg.metrics, self.history,
                           sorted(self.skipped.items()), export=exported)


QAT_HISTORY_NAME = "qat_history.csv"


def _save(qnet, cfg, out: Path, history: list[dict]) -> None:
    """Per-epoch checkpoint: the current weights as a loadable model folder of the same arch."""
    from ..models import modelfile

    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoints" / f"epoch{history[-1]['epoch']}"
    ckpt.mkdir(parents=True, exist_ok=True)
    modelfile.save_weights(to_original(qnet, cfg.arch, len(cfg.labels)).state_dict(), ckpt)
    modelfile.save_config(cfg, ckpt)
