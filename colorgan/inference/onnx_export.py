"""A jaxpr -> ONNX translator for the exported colorize function (`--format=onnx`).

Why not a converter package: with this stack, tf2onnx cannot read jax2tf's SavedModels (their
computation is one XlaCallModule op of StableHLO) and converts the TFLite model to a wrong graph;
jax2onnx from 0.13.1 on requires orbax-checkpoint < 0.11.37 (colorgan pins 0.12.8) and its older
releases fail on jax 0.10 (removed jax internals, symbolic dimensions). The function is small in
primitives (elementwise math, iota, dot_general, convolutions, max pooling, reductions), so it is
translated here, primitive by primitive, with `onnx.helper`: this module walks the jaxpr, onnx_ops.py
emits each primitive's nodes. The parity tests run the result in onnxruntime against
--mode=colorize.

Dynamic shapes: the function is traced with jax.export symbolic dimensions; a shape that holds
one (iota, broadcast, reshape) is built at run time from the input's Shape. Values computed from
constants alone (the weights, BatchNorm's folded scales) are evaluated here and stored as
initializers.
"""

from typing import Callable

import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np
import onnx
from onnx import helper

from colorgan.inference import onnx_ops


class _Translator:
  """Walks a jaxpr, folding constant computations and emitting ONNX nodes for the rest."""

  def __init__(self, graph: onnx_ops.Graph):
    self.g = graph
    self.env = {}  # jaxpr Var -> ("const", np.ndarray) or ("node", onnx name)

  # -- values
  def read(self, atom):
    if isinstance(atom, jax.extend.core.Literal):
      return ("const", np.asarray(atom.val, atom.aval.dtype))
    return self.env[atom]

  def name_of(self, atom) -> str:
    kind, value = self.read(atom)
    return self.g.const(value) if kind == "const" else value

  # -- walking
  def run(self, jaxpr, consts, args):
    for var, value in zip(jaxpr.constvars, consts):
      self.env[var] = value
    for var, value in zip(jaxpr.invars, args):
      self.env[var] = value
    for eqn in jaxpr.eqns:
      outs = self.equation(eqn)
      for var, value in zip(eqn.outvars, outs):
        self.env[var] = value
    return [self.read(v) for v in jaxpr.outvars]

  def equation(self, eqn):
    prim, params = eqn.primitive.name, eqn.params
    inputs = [self.read(v) for v in eqn.invars]
    if prim in ("jit", "pjit", "closed_call", "core_call", "remat", "checkpoint"):
      closed = params.get("jaxpr") or params.get("call_jaxpr")
      return self._inline(closed, inputs)
    if prim == "custom_jvp_call":
      return self._inline(params["call_jaxpr"], inputs)
    if prim == "custom_vjp_call":
      return self._inline(params.get("call_jaxpr") or params["fun_jaxpr"], inputs)
    if (
      all(kind == "const" for kind, _ in inputs)
      and all(onnx_ops.is_static(v.aval.shape) for v in eqn.outvars)
      and prim != "dim_as_value"
    ):
      outs = eqn.primitive.bind(*[jnp.asarray(value) for _, value in inputs], **params)
      outs = outs if eqn.primitive.multiple_results else [outs]
      return [("const", np.asarray(o)) for o in outs]
    if prim == "conv_general_dilated":
      # The kernel becomes an initializer in its own layout: only the convolution's input is named.
      kind, kernel = self.read(eqn.invars[1])
      x = self.name_of(eqn.invars[0])
      outs = onnx_ops.conv_general_dilated(self.g, eqn, x, kernel if kind == "const" else None)
    elif onnx_ops.supports(prim):
      outs = onnx_ops.translate(self.g, eqn, [self.name_of(v) for v in eqn.invars])
    else:
      raise onnx_ops.UnsupportedError(f"the JAX primitive {prim!r}")
    outs = outs if isinstance(outs, list) else [outs]
    return [("node", o) for o in outs]

  def _inline(self, closed, inputs):
    jaxpr = getattr(closed, "jaxpr", closed)
    consts = [("const", np.asarray(c)) for c in getattr(closed, "consts", ())]
    return _Translator(self.g).run(jaxpr, consts, inputs)


def to_onnx(
  fn: Callable,
  input_shape: str,
  input_dtype,
  *,
  input_name: str,
  output_name: str,
  opset: int,
  dim_names: dict[str, str] | None = None,
) -> onnx.ModelProto:
  """Translates fn (one array in, one array out) into an ONNX model.

  Args:
    fn: the JAX function.
    input_shape: its input's shape in jax.export's syntax, e.g. "h, w, 3".
    input_dtype: its input's dtype.
    input_name, output_name: the graph's input and output names.
    opset: the ONNX opset (>= 18: reductions take their axes as inputs).
    dim_names: names of the symbolic dimensions in the ONNX graph (default: their own).

  Raises:
    onnx_ops.UnsupportedError: fn uses a primitive or shape this translator does not handle.
  """
  shape = jax_export.symbolic_shape(input_shape)
  closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct(shape, input_dtype))
  graph = onnx_ops.Graph(opset)
  dim_names = dim_names or {}
  onnx_shape = []
  for axis, d in enumerate(shape):
    if isinstance(d, int):
      onnx_shape.append(d)
      continue
    if str(d) not in graph.dims:
      graph.dims[str(d)] = graph.op("Shape", [input_name], start=axis, end=axis + 1)
    onnx_shape.append(dim_names.get(str(d), str(d)))
  translator = _Translator(graph)
  consts = [("const", np.asarray(c)) for c in closed.consts]
  [(kind, out)] = translator.run(closed.jaxpr, consts, [("node", input_name)])
  if kind == "const":
    raise onnx_ops.UnsupportedError("a function whose output does not depend on its input")
  graph.nodes.append(helper.make_node("Identity", [out], [output_name]))
  out_aval = closed.jaxpr.outvars[0].aval
  out_shape = [d if isinstance(d, int) else dim_names.get(str(d), str(d)) for d in out_aval.shape]
  model = helper.make_model(
    helper.make_graph(
      graph.nodes,
      "colorgan",
      [helper.make_tensor_value_info(input_name, onnx_ops.onnx_type(input_dtype), onnx_shape)],
      [helper.make_tensor_value_info(output_name, onnx_ops.onnx_type(out_aval.dtype), out_shape)],
      initializer=graph.initializers,
    ),
    opset_imports=[helper.make_opsetid("", opset)],
    producer_name="colorgan",
  )
  onnx.checker.check_model(model)
  return model
