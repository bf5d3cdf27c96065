"""Export a diffusers SD1 / SDXL pipeline as one A1111/LDM-style `.safetensors` file.

diffusers can read these files (`from_single_file`) but ships no writer that fits arbitrary UNet depths, so this is
the inverse of `diffusers.loaders.single_file_utils`' conversions, written against the model configs so it works
for any number of UNet levels. Each renaming is a table of (diffusers prefix, LDM prefix, renames of the part after
the prefix); a weight no table knows is an error rather than a silently missing key.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

Table = list[tuple[str, str, dict[str, str]]]

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
# CLIP (transformers) → OpenCLIP names inside one text transformer layer
_OPEN_CLIP_LAYER = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def export_single_file(pipe, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write `pipe`'s UNet, VAE and text encoder(s) to `path` in the layout A1111 checkpoints use."""
    state = {key: value.detach().cpu().contiguous() for key, value in ldm_state_dict(pipe).items()}
    path = Path(path)
    # safetensors writes metadata in hash-map order: with two or more keys the bytes (and so the A1111
    # model hash) change from run to run. So one key: ours when there is metadata, else the usual "format".
    header = {"sdgate": json.dumps(metadata, sort_keys=True)} if metadata else {"format": "pt"}
    save_file(state, str(path), metadata=header)
    return path


def ldm_state_dict(pipe) -> dict[str, torch.Tensor]:
    """`pipe`'s weights under their single-file names (views of its tensors where the layout allows)."""
    state = {}
    state |= _prefixed("model.diffusion_model.", _rename(pipe.unet.state_dict(), _unet_table(pipe.unet)))
    state |= _prefixed("first_stage_model.", _vae_to_ldm(pipe.vae))
    if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL: CLIP-L, then OpenCLIP-bigG in its own layout
        state |= _prefixed("conditioner.embedders.0.transformer.", _clip_with_text_model(pipe.text_encoder))
        state |= _prefixed("conditioner.embedders.1.model.", _clip_to_open_clip(pipe.text_encoder_2))
    else:
        state |= _prefixed("cond_stage_model.transformer.", _clip_with_text_model(pipe.text_encoder))
    return state


# ----------------------------------------------------------------------------------------------- UNet


def _unet_table(unet) -> Table:
    config = unet.config
    levels, per_level = len(config.block_out_channels), config.layers_per_block
    keys = unet.state_dict().keys()
    table: Table = [
        ("conv_in.", "input_blocks.0.0.", {}),
        ("time_embedding.linear_1.", "time_embed.0.", {}),
        ("time_embedding.linear_2.", "time_embed.2.", {}),
        ("add_embedding.linear_1.", "label_emb.0.0.", {}),
        ("add_embedding.linear_2.", "label_emb.0.2.", {}),
        ("mid_block.resnets.0.", "middle_block.0.", _UNET_RESNET),
        ("mid_block.attentions.0.", "middle_block.1.", {}),
        ("mid_block.resnets.1.", "middle_block.2.", _UNET_RESNET),
        ("conv_norm_out.", "out.0.", {}),
        ("conv_out.", "out.2.", {}),
    ]
    # LDM numbers the encoder's blocks flat: input_blocks.k.{0 = resnet, 1 = attention}, a downsampler its own k.
    k = 1
    for level in range(levels):
        for j in range(per_level):
            table.append((f"down_blocks.{level}.resnets.{j}.", f"input_blocks.{k}.0.", _UNET_RESNET))
            table.append((f"down_blocks.{level}.attentions.{j}.", f"input_blocks.{k}.1.", {}))
            k += 1
        if level < levels - 1:
            table.append((f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{k}.0.op.", {}))
            k += 1
    # The decoder has one more layer per level; an upsampler follows the last layer's resnet (and attention).
    k = 0
    for level in range(levels):
        for j in range(per_level + 1):
            table.append((f"up_blocks.{level}.resnets.{j}.", f"output_blocks.{k}.0.", _UNET_RESNET))
            table.append((f"up_blocks.{level}.attentions.{j}.", f"output_blocks.{k}.1.", {}))
            k += 1
        has_attention = any(key.startswith(f"up_blocks.{level}.attentions.") for key in keys)
        table.append((f"up_blocks.{level}.upsamplers.0.", f"output_blocks.{k - 1}.{2 if has_attention else 1}.", {}))
    return table


# ------------------------------------------------------------------------------------------------ VAE


def _vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    levels = len(vae.config.block_out_channels)
    table: Table = [
        ("quant_conv.", "quant_conv.", {}),
        ("post_quant_conv.", "post_quant_conv.", {}),
    ]
    for part in ("encoder", "decoder"):
        table += [
            (f"{part}.conv_in.", f"{part}.conv_in.", {}),
            (f"{part}.conv_norm_out.", f"{part}.norm_out.", {}),
            (f"{part}.conv_out.", f"{part}.conv_out.", {}),
            (f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1.", {}),
            (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2.", {}),
            (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.", _VAE_ATTENTION),
        ]
    for i in range(levels):
        table += [
            (f"encoder.down_blocks.{i}.resnets.", f"encoder.down.{i}.block.", {}),
            (f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample.", {}),
            # the LDM decoder counts its levels from the bottom
            (f"decoder.up_blocks.{i}.resnets.", f"decoder.up.{levels - 1 - i}.block.", {}),
            (f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample.", {}),
        ]
    state = _rename(vae.state_dict(), table)
    # a resnet's conv_shortcut sits below the varying resnet index, so rename it after the table
    state = {key.replace(".conv_shortcut.", ".nin_shortcut."): value for key, value in state.items()}
    # LDM's mid-block attention uses 1x1 convolutions where diffusers uses Linear layers.
    for key, value in state.items():
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            state[key] = value[:, :, None, None]
    return state


# -------------------------------------------------------------------------------------- text encoders


def _clip_with_text_model(text_encoder) -> dict[str, torch.Tensor]:
    # transformers 5 flattened CLIPTextModel (no `text_model.` level); single files and their readers expect it.
    return {
        key if key.startswith("text_model.") or key == "text_projection.weight" else f"text_model.{key}": value
        for key, value in text_encoder.state_dict().items()
    }


def _clip_to_open_clip(text_encoder) -> dict[str, torch.Tensor]:
    """SDXL's second encoder in OpenCLIP layout: fused q;k;v input projection, transposed text projection."""
    state = _clip_with_text_model(text_encoder)
    out = {
        "token_embedding.weight": state.pop("text_model.embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("text_model.final_layer_norm.weight"),
        "ln_final.bias": state.pop("text_model.final_layer_norm.bias"),
        "text_projection": state.pop("text_projection.weight").T,
    }
    layers = range(text_encoder.config.num_hidden_layers)
    for i in layers:
        src, dst = f"text_model.encoder.layers.{i}.self_attn.", f"transformer.resblocks.{i}.attn."
        for kind in ("weight", "bias"):
            out[f"{dst}in_proj_{kind}"] = torch.cat([state.pop(f"{src}{p}_proj.{kind}") for p in "qkv"])
    table = [(f"text_model.encoder.layers.{i}.", f"transformer.resblocks.{i}.", _OPEN_CLIP_LAYER) for i in layers]
    return out | _rename(state, table)


# ---------------------------------------------------------------------------------------------- helpers


def _rename(state: dict[str, torch.Tensor], table: Table) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for src, dst, inner in table:
            if key.startswith(src):
                rest = key[len(src) :]
                for old, new in inner.items():
                    if rest.startswith(old + "."):
                        rest = new + rest[len(old) :]
                        break
                out[dst + rest] = value
                break
        else:
            raise KeyError(f"no single-file name for weight {key!r}")
    return out


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}
