//! onnxruntime's QOperator contrib ops (domain `com.microsoft`), which its
//! quantizer writes by default and tract does not implement, rewritten into
//! standard ONNX before tract reads the graph: each becomes
//! `DequantizeLinear` → the float op → `QuantizeLinear`. That is the
//! reference meaning of these ops, so outputs match onnxruntime's within
//! one quantization step (onnxruntime may round its fixed-point paths
//! differently). The rewrite runs in the guest, so untrusted model bytes
//! still never reach host code.

use tract_onnx::pb::{AttributeProto, ModelProto, NodeProto};

/// The ops [`expand`] rewrites.
pub const EXPANDED_OPS: &[&str] = &[
    "QLinearAdd",
    "QLinearMul",
    "QLinearAveragePool",
    "QLinearGlobalAveragePool",
    "QLinearConcat",
    "QLinearSigmoid",
    "QLinearLeakyRelu",
    "QGemm",
];

/// Rewrites every contrib op of [`EXPANDED_OPS`] in the model's main graph.
/// Fails, naming the node, on a form it cannot express (`channels_last`).
pub fn expand(model: &mut ModelProto) -> Result<(), String> {
    let Some(graph) = model.graph.as_mut() else { return Ok(()) };
    if !graph.node.iter().any(|n| EXPANDED_OPS.contains(&n.op_type.as_str())) {
        return Ok(());
    }
    let old = std::mem::take(&mut graph.node);
    let mut out = Graph { nodes: Vec::with_capacity(old.len() * 3) };
    for node in old {
        if !EXPANDED_OPS.contains(&node.op_type.as_str()) {
            out.nodes.push(node);
            continue;
        }
        out.expand(&node).map_err(|e| format!("{} (node {:?}): {e}", node.op_type, node.name))?;
    }
    graph.node = out.nodes;
    Ok(())
}

struct Graph {
    nodes: Vec<NodeProto>,
}

/// Input `i` of a node, `None` when absent or empty (an omitted optional input).
fn input(node: &NodeProto, i: usize) -> Option<&str> {
    node.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
}

fn required<'n>(node: &'n NodeProto, i: usize, what: &str) -> Result<&'n str, String> {
    input(node, i).ok_or_else(|| format!("input {i} ({what}) is missing"))
}

fn attribute<'n>(node: &'n NodeProto, name: &str) -> Option<&'n AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn int_attribute(node: &NodeProto, name: &str) -> Option<i64> {
    attribute(node, name).map(|a| a.i)
}

impl Graph {
    fn push(&mut self, op: &str, inputs: &[&str], output: String, attributes: Vec<AttributeProto>) -> String {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name: output.clone(),
            op_type: op.to_string(),
            attribute: attributes,
            ..NodeProto::default()
        });
        output
    }

    /// `(x - zero_point) * scale` as f32; `axis` for per-channel scales.
    fn dequantize(
        &mut self,
        x: &str,
        scale: &str,
        zero_point: Option<&str>,
        axis: Option<i64>,
        name: String,
    ) -> String {
        let mut inputs = vec![x, scale];
        inputs.extend(zero_point);
        let attributes = axis.map(|a| vec![int("axis", a)]).unwrap_or_default();
        self.push("DequantizeLinear", &inputs, name, attributes)
    }

    fn quantize(&mut self, x: &str, scale: &str, zero_point: Option<&str>, output: &str) {
        let mut inputs = vec![x, scale];
        inputs.extend(zero_point);
        self.push("QuantizeLinear", &inputs, output.to_string(), vec![]);
    }

    fn expand(&mut self, node: &NodeProto) -> Result<(), String> {
        let output = node.output.first().filter(|o| !o.is_empty()).ok_or("it has no output")?.clone();
        let tmp = |what: &str| format!("{output}.{what}");
        let keep = |names: &[&str]| -> Vec<AttributeProto> {
            node.attribute.iter().filter(|a| names.contains(&a.name.as_str())).cloned().collect()
        };
        if int_attribute(node, "channels_last").unwrap_or(0) != 0 {
            return Err("channels_last = 1 is not supported; quantize with channels-first (NCHW) tensors".into());
        }
        match node.op_type.as_str() {
            "QLinearAdd" | "QLinearMul" => {
                let a = self.dequantize(
                    required(node, 0, "A")?,
                    required(node, 1, "A_scale")?,
                    input(node, 2),
                    None,
                    tmp("a"),
                );
                let b = self.dequantize(
                    required(node, 3, "B")?,
                    required(node, 4, "B_scale")?,
                    input(node, 5),
                    None,
                    tmp("b"),
                );
                let op = if node.op_type == "QLinearAdd" { "Add" } else { "Mul" };
                let c = self.push(op, &[&a, &b], tmp("float"), vec![]);
                self.quantize(&c, required(node, 6, "C_scale")?, input(node, 7), &output);
            }
            "QLinearAveragePool" | "QLinearGlobalAveragePool" | "QLinearSigmoid" | "QLinearLeakyRelu" => {
                let x = self.dequantize(
                    required(node, 0, "X")?,
                    required(node, 1, "X_scale")?,
                    input(node, 2),
                    None,
                    tmp("x"),
                );
                let (op, attributes) = match node.op_type.as_str() {
                    "QLinearAveragePool" => (
                        "AveragePool",
                        keep(&["auto_pad", "ceil_mode", "count_include_pad", "kernel_shape", "pads", "strides"]),
                    ),
                    "QLinearGlobalAveragePool" => ("GlobalAveragePool", vec![]),
                    "QLinearSigmoid" => ("Sigmoid", vec![]),
                    _ => ("LeakyRelu", keep(&["alpha"])),
                };
                let y = self.push(op, &[&x], tmp("float"), attributes);
                self.quantize(&y, required(node, 3, "Y_scale")?, input(node, 4), &output);
            }
            "QLinearConcat" => {
                let (y_scale, y_zero_point) = (required(node, 0, "Y_scale")?, input(node, 1));
                let rest = node.input.len().saturating_sub(2);
                if rest == 0 || !rest.is_multiple_of(3) {
                    return Err(format!(
                        "{} inputs; expected Y_scale, Y_zero_point and (X, scale, zero point) triples",
                        node.input.len()
                    ));
                }
                let mut parts = Vec::with_capacity(rest / 3);
                for (k, i) in (2..node.input.len()).step_by(3).enumerate() {
                    let x = required(node, i, "X")?;
                    parts.push(self.dequantize(
                        x,
                        required(node, i + 1, "X_scale")?,
                        input(node, i + 2),
                        None,
                        tmp(&format!("x{k}")),
                    ));
                }
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                let y = self.push("Concat", &parts, tmp("float"), keep(&["axis"]));
                self.quantize(&y, y_scale, y_zero_point, &output);
            }
            "QGemm" => {
                let trans_b = int_attribute(node, "transB").unwrap_or(0);
                let (a_scale, b_scale) = (required(node, 1, "a_scale")?, required(node, 4, "b_scale")?);
                let a = self.dequantize(required(node, 0, "A")?, a_scale, input(node, 2), None, tmp("a"));
                // Per-channel weights have one scale per output column: axis 0 of B when it is transposed.
                let b = self.dequantize(
                    required(node, 3, "B")?,
                    b_scale,
                    input(node, 5),
                    Some(if trans_b != 0 { 0 } else { 1 }),
                    tmp("b"),
                );
                let mut gemm_inputs = vec![a, b];
                if let Some(bias) = input(node, 6) {
                    // The int32 bias is quantized with scale a_scale * b_scale and zero point 0.
                    let float = self.push("Cast", &[bias], tmp("bias.f32"), vec![int("to", 1)]);
                    let by_a = self.push("Mul", &[&float, a_scale], tmp("bias.a"), vec![]);
                    gemm_inputs.push(self.push("Mul", &[&by_a, b_scale], tmp("bias"), vec![]));
                }
                let gemm_inputs: Vec<&str> = gemm_inputs.iter().map(String::as_str).collect();
                let attributes = keep(&["alpha", "transA", "transB"]);
                match input(node, 7) {
                    Some(y_scale) => {
                        let y = self.push("Gemm", &gemm_inputs, tmp("float"), attributes);
                        self.quantize(&y, y_scale, input(node, 8), &output);
                    }
                    // Without y_scale, QGemm's output is float.
                    None => {
                        self.push("Gemm", &gemm_inputs, output.clone(), attributes);
                    }
                }
            }
            other => return Err(format!("{other} is not an op this rewrite knows")),
        }
        Ok(())
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    // AttributeType::Int is 2 in onnx.proto.
    AttributeProto { name: name.to_string(), i: value, r#type: 2, ..AttributeProto::default() }
}
