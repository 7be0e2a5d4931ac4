"""Benchmark the plain, optax, chunked and fused divergences on this machine.

For each size it measures XLA's temporary memory and the median wall time
of the value and the gradient with respect to Q (Q's hidden states and
kernel for the linear forms), and writes a Markdown report.

Usage::

  python -m experiments.bench_divergences                  # full grid
  python -m experiments.bench_divergences --tokens=256 --vocab=4096 \\
    --fused_tokens=256 --fused_vocab=4096 --repeats=2 --output=/tmp/b.md
  python -m experiments.bench_divergences --mode=sweep     # chunk sizes
"""

import dataclasses
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging

import divergences as dv

_MODE = flags.DEFINE_enum(
  "mode",
  "grid",
  ["grid", "sweep"],
  "grid: every form over the sizes below; sweep: the chunked and fused "
  "forms over --chunk_sizes and --fused_chunk_sizes, at the first of "
  "--tokens and --fused_tokens and every vocabulary size.",
)
_TOKENS = flags.DEFINE_list("tokens", ["2048", "8192"], "Rows of the logits.")
_VOCAB = flags.DEFINE_list("vocab", ["32000", "128000"], "Vocabulary sizes.")
_DIVERGENCES = flags.DEFINE_list(
  "divergences", ["kl", "js"], "Registry names for the logits forms."
)
_FUSED_TOKENS = flags.DEFINE_list(
  "fused_tokens", ["2048", "4096", "8192"], "Rows for the linear forms."
)
_FUSED_VOCAB = flags.DEFINE_list(
  "fused_vocab", ["32000", "128000"], "Vocabulary sizes, linear forms."
)
_FUSED_DIVERGENCES = flags.DEFINE_list(
  "fused_divergences", ["kl"], "Registry names for the linear forms."
)
_HIDDEN = flags.DEFINE_integer("hidden", 128, "Hidden size of P and Q.")
_FORMS = flags.DEFINE_list(
  "forms",
  ["plain", "optax", "chunked", "plain_linear", "fused"],
  "Forms to run; optax runs for kl only.",
)
_DTYPE = flags.DEFINE_enum(
  "dtype", "float32", ["float32", "bfloat16"], "Dtype of every input."
)
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per form.")
_BUDGET = flags.DEFINE_float(
  "budget_seconds",
  30.0,
  "Stop timing a form once its timed calls took this many seconds.",
)
_SLOW_SECONDS = 2.0  # A first call this slow counts as a timed call.
_CHUNK_SIZES = flags.DEFINE_list(
  "chunk_sizes", ["1", "2", "4", "8", "16", "32", "64"], "Sweep: chunked."
)
_FUSED_CHUNK_SIZES = flags.DEFINE_list(
  "fused_chunk_sizes", ["64", "128", "256", "512", "1024"], "Sweep: fused."
)
_OUTPUT = flags.DEFINE_string(
  "output",
  None,
  "Markdown report; defaults to docs/benchmarks.md (grid) or "
  "docs/chunk_sizes.md (sweep).",
)
# Run a form only if it leaves this much of the available memory free, for
# the allocator's overhead and for other processes on the machine.
_MEMORY_HEADROOM = 2 * 2**30
_MIB = 2.0**20
_GIB = 2.0**30


@dataclasses.dataclass
class Result:
  """One form at one size; times are None when the form did not run."""

  divergence: str
  form: str
  tokens: int
  vocab: int
  hidden: int | None
  chunk_size: int | None
  temp_bytes: int
  need_bytes: int
  moved_bytes: int
  flops: int | None
  times: list[float] = dataclasses.field(default_factory=list)
  value: float | None = None
  note: str = ""

  @property
  def seconds(self) -> float | None:
    return statistics.median(self.times) if self.times else None


# The machine.


def read_machine() -> dict[str, str]:
  """Return the CPU model, cores, memory, load and software versions."""
  model = platform.processor() or "unknown"
  with open("/proc/cpuinfo") as cpuinfo:
    for line in cpuinfo:
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
  return {
    "CPU": model,
    "cores": str(os.cpu_count()),
    "memory": f"{_meminfo('MemTotal') / _GIB:.1f} GiB",
    "load average (1, 5, 15 min) at start": load,
    "jax": jax.__version__,
    "optax": optax.__version__,
    "backend": jax.default_backend(),
  }


def _meminfo(key: str) -> int:
  with open("/proc/meminfo") as meminfo:
    for line in meminfo:
      if line.startswith(key + ":"):
        return int(line.split()[1]) * 1024
  raise KeyError(f"{key} not found in /proc/meminfo")


def available_bytes() -> int:
  return _meminfo("MemAvailable")


def copy_bandwidth(num_bytes: int = 2**30, repeats: int = 5) -> dict:
  """Measure jitted array copies of ``num_bytes``, in bytes per second.

  ``in_place`` donates its input, so the output reuses pages already
  mapped: this is the memory bandwidth. ``fresh`` writes to a new output
  each call and also pays for the kernel mapping and zeroing those pages.
  """
  x = jnp.ones(num_bytes // 4, jnp.float32)
  in_place = jax.jit(lambda x: x + 1.0, donate_argnums=0)
  fresh = jax.jit(lambda x: x + 1.0)
  rates = {"in_place": [], "fresh": []}
  for _ in range(repeats + 1):
    start = time.perf_counter()
    x = in_place(x).block_until_ready()
    rates["in_place"].append(2 * num_bytes / (time.perf_counter() - start))
    start = time.perf_counter()
    y = fresh(x).block_until_ready()
    rates["fresh"].append(2 * num_bytes / (time.perf_counter() - start))
    del y
  # The first call compiles; the rest are measurements.
  return {k: statistics.median(v[1:]) for k, v in rates.items()}


# The forms. Each returns a scalar loss of (Q arrays..., P arrays...).


def logits_loss(form: str, name: str, chunk_size: int | None):
  if form == "plain":
    return lambda q, p: dv.f_divergence(name, p, q).sum()
  if form == "optax":
    return lambda q, p: optax.losses.kl_divergence_with_log_targets(
      jax.nn.log_softmax(q.astype(jnp.float32)),
      jax.nn.log_softmax(p.astype(jnp.float32)),
    ).sum()
  if form == "chunked":
    return lambda q, p: dv.chunked_divergence(
      name, p, q, chunk_size=chunk_size
    ).sum()
  raise ValueError(f"unknown logits form {form!r}")


def linear_loss(form: str, name: str, chunk_size: int | None):
  if form == "plain_linear":
    return lambda qh, qk, ph, pk: dv.f_divergence(name, ph @ pk, qh @ qk).sum()
  if form == "fused":
    return lambda qh, qk, ph, pk: dv.fused_linear_divergence(
      name, ph, pk, qh, qk, chunk_size=chunk_size
    ).sum()
  raise ValueError(f"unknown linear form {form!r}")


def logits_shapes(tokens: int, vocab: int, dtype) -> list:
  return [jax.ShapeDtypeStruct((tokens, vocab), dtype)] * 2


def linear_shapes(tokens: int, vocab: int, hidden: int, dtype) -> list:
  return [
    jax.ShapeDtypeStruct((tokens, hidden), dtype),
    jax.ShapeDtypeStruct((hidden, vocab), dtype),
  ] * 2


def input_scales(shapes) -> list[float]:
  """Return 1 for logits and hidden states, 1/sqrt(hidden) for kernels."""
  if len(shapes) == 2:
    return [1.0, 1.0]
  scale = 1.0 / np.sqrt(shapes[1].shape[0])
  return [1.0, scale, 1.0, scale]


def make_inputs(shapes, seed: int = 0) -> list[jax.Array]:
  """Draw standard normal inputs, scaled by ``input_scales``."""
  keys = jax.random.split(jax.random.key(seed), len(shapes))
  arrays = []
  for key, shape, scale in zip(keys, shapes, input_scales(shapes), strict=True):
    x = jax.random.normal(key, shape.shape, jnp.float32) * scale
    arrays.append(x.astype(shape.dtype))
  # Dispatch is asynchronous: wait, so that the memory checks see them.
  return jax.block_until_ready(arrays)


# Measurement.


def compile_form(loss, shapes, num_grads: int):
  """Compile value_and_grad of ``loss`` w.r.t. its first ``num_grads`` args."""
  grad_fn = jax.value_and_grad(loss, argnums=tuple(range(num_grads)))
  return jax.jit(grad_fn).lower(*shapes).compile()


def time_calls(compiled, args, repeats: int, budget: float):
  """Return the loss value and the wall times of up to ``repeats`` calls.

  The first call is a warm-up unless it takes ``_SLOW_SECONDS`` or more:
  compilation happened ahead of time, and one-time setup is small next to
  such a call.
  """
  start = time.perf_counter()
  value, _ = jax.block_until_ready(compiled(*args))
  first = time.perf_counter() - start
  times = [first] if first >= _SLOW_SECONDS else []
  while len(times) < repeats and (not times or sum(times) < budget):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return float(value), times


def measure(result: Result, compiled, args) -> Result:
  """Time ``compiled`` unless it would not fit in the available memory."""
  if args is None:
    return result
  analysis = compiled.memory_analysis()
  extra = analysis.temp_size_in_bytes + analysis.output_size_in_bytes
  available = available_bytes()
  if extra > available - _MEMORY_HEADROOM:
    result.note = (
      f"does not fit: needs {extra / _GIB:.1f} GiB beyond its inputs, "
      f"{available / _GIB:.1f} GiB available"
    )
    return result
  try:
    result.value, result.times = time_calls(
      compiled, args, _REPEATS.value, _BUDGET.value
    )
  except jax.errors.JaxRuntimeError as error:
    logging.exception("%s %s failed", result.form, result.divergence)
    result.note = f"failed: {str(error).splitlines()[0][:80]}"
  return result


def run_form(spec: dict, loss, shapes, args, num_grads: int) -> Result:
  """Compile one form, record its memory, and time it when it fits."""
  logging.info("running %s", spec)
  compiled = compile_form(loss, shapes, num_grads)
  analysis = compiled.memory_analysis()
  result = Result(
    temp_bytes=analysis.temp_size_in_bytes,
    need_bytes=(
      analysis.temp_size_in_bytes
      + analysis.argument_size_in_bytes
      + analysis.output_size_in_bytes
    ),
    **spec,
  )
  return measure(result, compiled, args)


def allocate(shapes) -> tuple[list[jax.Array] | None, str]:
  """Allocate the inputs of one size, or explain why they do not fit."""
  need = sum(np.prod(s.shape) * s.dtype.itemsize for s in shapes)
  available = available_bytes()
  if need > available - _MEMORY_HEADROOM:
    return None, (
      f"inputs do not fit: {need / _GIB:.1f} GiB, "
      f"{available / _GIB:.1f} GiB available"
    )
  return make_inputs(shapes), ""


def logits_specs(tokens, vocab, dtype, forms, chunk_size=None):
  bytes_per = jnp.dtype(dtype).itemsize
  for name in _DIVERGENCES.value:
    for form in ("plain", "optax", "chunked"):
      if form not in forms or (form == "optax" and name != "kl"):
        continue
      spec = dict(
        divergence=name,
        form=form,
        tokens=tokens,
        vocab=vocab,
        hidden=None,
        chunk_size=chunk_size if form == "chunked" else None,
        # Read P and Q once, write the gradient once.
        moved_bytes=3 * tokens * vocab * bytes_per,
        flops=None,
      )
      yield spec, logits_loss(form, name, chunk_size)


def linear_specs(tokens, vocab, hidden, dtype, forms, chunk_size=None):
  bytes_per = jnp.dtype(dtype).itemsize
  for name in _FUSED_DIVERGENCES.value:
    for form in ("plain_linear", "fused"):
      if form not in forms:
        continue
      spec = dict(
        divergence=name,
        form=form,
        tokens=tokens,
        vocab=vocab,
        hidden=hidden,
        chunk_size=chunk_size if form == "fused" else None,
        # Read the four inputs once, write the two gradients once.
        moved_bytes=(3 * tokens * hidden + 4 * hidden * vocab) * bytes_per,
        # Both logits, then Q's hidden and kernel gradients: 4 matmuls.
        flops=8 * tokens * vocab * hidden,
      )
      yield spec, linear_loss(form, name, chunk_size)


def run_size(specs, shapes, num_grads: int) -> list[Result]:
  args, reason = allocate(shapes)
  results = []
  for spec, loss in specs:
    result = run_form(spec, loss, shapes, args, num_grads)
    result.note = result.note or reason
    results.append(result)
    logging.info("%s", result)
  del args
  return results


def run_grid(dtype) -> list[Result]:
  results = []
  for vocab in map(int, _VOCAB.value):
    for tokens in map(int, _TOKENS.value):
      shapes = logits_shapes(tokens, vocab, dtype)
      specs = logits_specs(tokens, vocab, dtype, _FORMS.value)
      results += run_size(specs, shapes, 1)
  if not {"plain_linear", "fused"} & set(_FORMS.value):
    return results
  hidden = _HIDDEN.value
  for vocab in map(int, _FUSED_VOCAB.value):
    for tokens in map(int, _FUSED_TOKENS.value):
      shapes = linear_shapes(tokens, vocab, hidden, dtype)
      specs = linear_specs(tokens, vocab, hidden, dtype, _FORMS.value)
      results += run_size(specs, shapes, 2)
  return results


def run_sweep(dtype) -> list[Result]:
  """Time the chunked and fused forms over chunk sizes, without baselines."""
  results = []
  for vocab in map(int, _VOCAB.value):
    tokens = int(_TOKENS.value[0])
    shapes = logits_shapes(tokens, vocab, dtype)
    for chunk_size in map(int, _CHUNK_SIZES.value):
      specs = logits_specs(tokens, vocab, dtype, ["chunked"], chunk_size)
      results += run_size(specs, shapes, 1)
  for vocab in map(int, _FUSED_VOCAB.value):
    tokens, hidden = int(_FUSED_TOKENS.value[0]), _HIDDEN.value
    shapes = linear_shapes(tokens, vocab, hidden, dtype)
    for chunk_size in map(int, _FUSED_CHUNK_SIZES.value):
      specs = linear_specs(tokens, vocab, hidden, dtype, ["fused"], chunk_size)
      results += run_size(specs, shapes, 2)
  return results


# The report.


def baseline_of(result: Result, results: list[Result]) -> Result | None:
  """Return the plain form at the same size as ``result``."""
  plain = "plain_linear" if result.hidden else "plain"
  for other in results:
    if (
      other.form == plain
      and other.divergence == result.divergence
      and (other.tokens, other.vocab, other.hidden)
      == (result.tokens, result.vocab, result.hidden)
    ):
      return other
  return None


def _ratio(numerator, denominator) -> str:
  if numerator is None or not denominator:
    return "-"
  return f"{numerator / denominator:.3f}"


def table_row(result: Result, results, bandwidth: float) -> str:
  base = baseline_of(result, results)
  seconds = result.seconds
  cells = [
    result.divergence,
    result.form,
    str(result.tokens),
    str(result.vocab),
    str(result.hidden or "-"),
    _chunk_label(result),
    f"{result.temp_bytes / _MIB:,.1f}",
    _ratio(result.temp_bytes, base.temp_bytes if base else None),
    f"{seconds:.3f}" if seconds is not None else "-",
    str(len(result.times)),
    _ratio(seconds, base.seconds if base else None),
    _ratio(result.moved_bytes / bandwidth, seconds),
    _ratio(result.flops, seconds and seconds * 1e9),
    _value_check(result, base),
    result.note,
  ]
  return "| " + " | ".join(cells) + " |"


def _chunk_label(result: Result) -> str:
  """Return the rows per chunk, marking the library's default."""
  if result.chunk_size is not None:
    return str(min(result.chunk_size, result.tokens))
  if result.form == "chunked":
    elements = dv.chunked.DEFAULT_CHUNK_ELEMENTS
    rows = dv.chunked.default_chunk_size(result.vocab, elements)
  elif result.form == "fused":
    rows = dv.fused.DEFAULT_CHUNK_SIZE
  else:
    return "-"
  return f"{min(rows, result.tokens)} (default)"


def _value_check(result: Result, base: Result | None) -> str:
  if base is None or result.value is None or base.value is None:
    return "-"
  if base is result:
    return "ref"
  return f"{abs(result.value - base.value) / abs(base.value):.1e}"


_HEADER = (
  "| divergence | form | tokens | vocab | hidden | chunk | temp MiB "
  "| temp / plain | median s | n | time / plain | bandwidth bound "
  "| GFLOP/s | value rel. diff | note |\n"
  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def acceptance_lines(results: list[Result]) -> list[str]:
  """Check the targets that apply to the sizes of this run."""
  lines = []
  for result in results:
    base = baseline_of(result, results)
    if base is None or result.seconds is None or base.seconds is None:
      continue
    if result.form == "chunked" and (result.tokens, result.vocab) == (
      8192,
      32000,
    ):
      limits = (1 / 16, 0.5)
    elif result.form == "fused" and (
      result.tokens,
      result.vocab,
      result.hidden,
    ) == (4096, 32000, 128):
      limits = (1 / 10, 1.25)
    else:
      continue
    memory = result.temp_bytes / base.temp_bytes
    speed = result.seconds / base.seconds
    passed = memory <= limits[0] and speed <= limits[1]
    lines.append(
      f"- {result.form} {result.divergence} at {result.tokens} x "
      f"{result.vocab}: temp memory {memory:.4f} of plain (target <= "
      f"{limits[0]:.4f}), time {speed:.3f} of plain (target <= "
      f"{limits[1]}): {'met' if passed else 'NOT met'}"
    )
  return lines


def summary_lines(results: list[Result]) -> list[str]:
  """Return the acceptance checks (grid) or the current defaults (sweep)."""
  if _MODE.value == "grid":
    lines = acceptance_lines(results) or ["- none of the target sizes ran"]
    return ["## Acceptance targets", "", *lines]
  return [
    "## Defaults",
    "",
    "- chunked: `divergences.chunked.DEFAULT_CHUNK_ELEMENTS` = "
    f"{dv.chunked.DEFAULT_CHUNK_ELEMENTS} entries per block, rounded down "
    "to a power of two of rows",
    "- fused: `divergences.fused.DEFAULT_CHUNK_SIZE` = "
    f"{dv.fused.DEFAULT_CHUNK_SIZE} rows",
  ]


def write_report(path, machine, bandwidth, results, seconds, command):
  rows = [table_row(r, results, bandwidth["in_place"]) for r in results]
  machine_lines = [f"- {k}: {v}" for k, v in machine.items()]
  title = "benchmarks" if _MODE.value == "grid" else "chunk-size sweep"
  text = "\n".join(
    [
      f"# Divergence {title}",
      "",
      f"Written by `{command}` in {seconds / 60:.1f} minutes.",
      "",
      "## Machine",
      "",
      *machine_lines,
      f"- load average at end: "
      f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}",
      f"- copy bandwidth, in place (donated buffer): "
      f"{bandwidth['in_place'] / 1e9:.2f} GB/s",
      f"- copy bandwidth, into a fresh output: "
      f"{bandwidth['fresh'] / 1e9:.2f} GB/s",
      "",
      *summary_lines(results),
      "",
      "## Results",
      "",
      _COLUMNS,
      "",
      _HEADER,
      *rows,
      "",
    ]
  )
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as report:
    report.write(text)


_COLUMNS = """\
Every form computes the value and the gradient with respect to Q (Q's
hidden states and kernel for the linear forms) in one jitted call, with
P's gradient unused. Columns:

- temp MiB: `memory_analysis().temp_size_in_bytes` of the compiled call,
  without its arguments and outputs.
- median s, n: median wall time of n calls. A first call under 2 s is a
  warm-up and not counted; compilation always happens ahead of time.
  Timing stops after the budget of seconds in the command, once one call
  is counted.
- bandwidth bound: (bytes that must move) / (in-place copy bandwidth)
  divided by the median time, so 1.0 would run at memory speed. Logits
  forms must read P and Q and write the gradient once; linear forms must
  read their four inputs and write two gradients.
- GFLOP/s: the four matmuls of the linear forms (both logits, then Q's
  hidden and kernel gradients), 8 x tokens x vocab x hidden FLOPs, over
  the median time. The fused form recomputes both logits in the backward
  pass, so it runs 12 x tokens x vocab x hidden FLOPs.
- value rel. diff: relative difference of the summed value from the
  plain form's at the same size.
- note: why a form did not run. A form runs only if its temporary and
  output bytes leave 2 GiB of the memory available once its inputs exist.
- The two copy bandwidths differ by the cost of mapping fresh pages, which
  every call pays for the outputs and temporaries it allocates."""


def main(argv):
  del argv
  start = time.perf_counter()
  dtype = jnp.dtype(_DTYPE.value)
  machine = read_machine()
  logging.info("machine: %s", machine)
  bandwidth = copy_bandwidth()
  logging.info("copy bandwidth: %s", bandwidth)
  results = run_grid(dtype) if _MODE.value == "grid" else run_sweep(dtype)
  default = "benchmarks.md" if _MODE.value == "grid" else "chunk_sizes.md"
  path = _OUTPUT.value or os.path.join("docs", default)
  write_report(
    path,
    machine,
    bandwidth,
    results,
    time.perf_counter() - start,
    _command_line(),
  )
  logging.info("wrote %s", path)


def _command_line() -> str:
  """Return the command of this run, with the flags that were given."""
  module = flags.FLAGS.find_module_defining_flag(_MODE.name)
  present = [f for f in flags.FLAGS.get_flags_for_module(module) if f.present]
  return " ".join(
    ["python -m experiments.bench_divergences"]
    + [f.serialize() for f in present]
  )


if __name__ == "__main__":
  app.run(main)
