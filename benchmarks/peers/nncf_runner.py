"""NNCF post-training quantization of the ONNX model. Runs in its own venv.

usage: python nncf_runner.py MODEL CALIB.npy|CALIB.npz OUT.onnx [default|signed|transformer]
  default: NNCF's default preset (symmetric; activations that are never negative get UINT8
           quantizers, and fast bias correction is on) — not TensorRT-deployable as is.
  signed:  the same with every activation quantizer forced to signed INT8, zero point 0
           (AdvancedQuantizationParameters(activations_quantization_params=
           QuantizationParameters(signedness_to_force=True))): what TensorRT accepts.
  transformer: the default preset with model_type=nncf.ModelType.TRANSFORMER (SmoothQuant,
           attention-aware placement): NNCF's recipe for encoders.
Prints one JSON line: {"quantize_s": seconds of the nncf.quantize call, ...}.
"""

import copy
import json
import sys
import time

import nncf
import onnx
from calib_data import count, feed, graph_inputs, load
from nncf.quantization.advanced_parameters import (
    AdvancedQuantizationParameters,
    QuantizationParameters,
)


def _let_activation_signedness_be_forced():
    """NNCF 3.4 rejects signedness_to_force=True for activations ("Quantization parameter
    constraints ... are incompatible with HW capabilities"): its HW config leaves activation
    signedness open (None) and the constraint check compares with ==. Here an open signedness
    takes the forced value before that check — what NNCF itself does when there is no HW config
    (QuantizationConstraints.apply_constraints_to). Only the "signed" variant calls this."""
    from nncf.common.quantization.structs import QuantizationConstraints

    original = QuantizationConstraints.constrain_qconfig_list

    def constrain(self, node_name, target_device, qconfigs):
        forced = self.qconf_attr_vs_constraint_dict.get("signedness_to_force")
        if forced is not None:
            qconfigs = [copy.deepcopy(q) for q in qconfigs]
            for q in qconfigs:
                if q.signedness_to_force is None:
                    q.signedness_to_force = forced
        return original(self, node_name, target_device, qconfigs)

    QuantizationConstraints.constrain_qconfig_list = constrain


def main(model_path, calib, out, variant="default"):
    if variant not in ("default", "signed", "transformer"):
        raise SystemExit(f"unknown variant {variant!r}: default | signed | transformer")
    model = onnx.load(model_path)
    arrays = load(calib, graph_inputs(model))
    dataset = nncf.Dataset(range(count(arrays)), lambda i: feed(arrays, i))
    kwargs = {}
    if variant == "transformer":
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
    if variant == "signed":
        _let_activation_signedness_be_forced()
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(
            activations_quantization_params=QuantizationParameters(signedness_to_force=True)
        )
    t0 = time.perf_counter()
    q = nncf.quantize(model, dataset, subset_size=count(arrays), **kwargs)
    seconds = time.perf_counter() - t0
    onnx.save(q, out)
    print(json.dumps({"quantize_s": seconds, "images": count(arrays), "variant": variant}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
