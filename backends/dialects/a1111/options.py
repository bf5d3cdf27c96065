"""A1111's options (`opts`, GET/POST /sdapi/v1/options), its command-line flags (GET /cmd-flags) and the store
that keeps what clients changed (docs/reference/a1111_api.md §3.4)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from ... import outputs
from ...job import InvalidRequest

log = logging.getLogger(__name__)

RNG_SOURCE = "CPU"  # the engine draws every image's noise from its own CPU torch.Generator

# A1111 1.10 option names and defaults: the ones clients read or set (§3.4) and the ones this server honours
# (marked *). POST /options accepts exactly these keys; the values of the others are stored and echoed.
OPTION_DEFAULTS: dict[str, Any] = {
    # saving
    "samples_save": True,
    "samples_format": "png",  # *
    "samples_filename_pattern": "",
    "save_images_add_number": True,
    "grid_save": True,  # *
    "grid_format": "png",
    "grid_extended_filename": False,
    "grid_only_if_multiple": True,
    "n_rows": -1,
    "enable_pnginfo": True,  # *
    "save_txt": False,
    "save_images_before_face_restoration": False,
    "save_images_before_highres_fix": False,
    "save_images_before_color_correction": False,
    "save_mask": False,
    "save_mask_composite": False,
    "jpeg_quality": 80,  # *
    "webp_lossless": False,  # *
    "export_for_4chan": True,
    "img_downscale_threshold": 4.0,
    "target_side_length": 4000.0,
    "img_max_size_mp": 200.0,
    "use_original_name_batch": True,
    "use_upscaler_name_as_suffix": False,
    "save_selected_only": True,
    "save_init_img": False,
    "temp_dir": "",
    "clean_temp_dir_at_start": False,
    "save_incomplete_images": False,
    "outdir_samples": "",
    "outdir_txt2img_samples": "outputs/txt2img-images",
    "outdir_img2img_samples": "outputs/img2img-images",
    "outdir_extras_samples": "outputs/extras-images",
    "outdir_grids": "",
    "outdir_txt2img_grids": "outputs/txt2img-grids",
    "outdir_img2img_grids": "outputs/img2img-grids",
    "outdir_save": "log/images",
    "outdir_init_images": "outputs/init-images",
    "save_to_dirs": True,
    "grid_save_to_dirs": True,
    "directories_filename_pattern": "[date]",
    "directories_max_prompt_words": 8,
    # upscaling / face restoration
    "ESRGAN_tile": 192,
    "ESRGAN_tile_overlap": 8,
    "realesrgan_enabled_models": ["R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"],
    "upscaler_for_img2img": None,
    "face_restoration": False,
    "face_restoration_model": "CodeFormer",
    "code_former_weight": 0.5,
    "face_restoration_unload": False,
    # system / API
    "auto_launch_browser": "Local",
    "show_warnings": False,
    "memmon_poll_rate": 8,
    "samples_log_stdout": False,
    "multiple_tqdm": True,
    "list_hidden_files": True,
    "disable_mmap_load_safetensors": False,
    "api_enable_requests": True,
    "api_forbid_local_requests": True,
    "api_useragent": "",
    # stable diffusion
    "sd_model_checkpoint": None,  # * a title; the live value comes from the model manager
    "sd_checkpoints_limit": 1,
    "sd_checkpoints_keep_in_cpu": True,
    "sd_checkpoint_cache": 0,
    "sd_unet": "Automatic",
    "enable_quantization": False,
    "emphasis": "Original",  # * "None" turns the (x:1.2) syntax off
    "enable_batch_seeds": True,
    "comma_padding_backtrack": 20,
    "sdxl_clip_l_skip": False,
    "CLIP_stop_at_last_layers": 1,  # *
    "upcast_attn": False,
    "randn_source": RNG_SOURCE,
    "tiling": False,
    "hires_fix_refiner_pass": "second pass",
    "enable_prompt_comments": True,
    "sdxl_crop_top": 0,
    "sdxl_crop_left": 0,
    "sdxl_refiner_low_aesthetic_score": 2.5,
    "sdxl_refiner_high_aesthetic_score": 6.0,
    "sd_vae_checkpoint_cache": 0,
    "sd_vae": "Automatic",  # accepted and stored; the checkpoint's own VAE is used
    "sd_vae_overrides_per_model_preferences": True,
    "auto_vae_precision_bfloat16": False,
    "auto_vae_precision": True,
    "sd_vae_encode_method": "Full",
    "sd_vae_decode_method": "Full",
    "inpainting_mask_weight": 1.0,
    "initial_noise_multiplier": 1.0,
    "img2img_extra_noise": 0.0,
    "img2img_color_correction": False,
    "img2img_fix_steps": False,
    "img2img_background_color": "#ffffff",
    "return_mask": False,
    "return_mask_composite": False,
    "overlay_inpaint": True,  # * paste the unmasked original back over an inpainted result
    "cross_attention_optimization": "Automatic",
    "s_min_uncond": 0.0,
    "token_merging_ratio": 0.0,
    "token_merging_ratio_img2img": 0.0,
    "token_merging_ratio_hr": 0.0,
    "pad_cond_uncond": False,
    "pad_cond_uncond_v0": False,
    "persistent_cond_cache": True,
    "batch_cond_uncond": True,
    "fp8_storage": "Disable",
    "cache_fp16_weight": False,
    "auto_backcompat": True,
    "use_old_emphasis_implementation": False,
    "use_old_karras_scheduler_sigmas": False,
    "no_dpmpp_sde_batch_determinism": False,
    "use_old_hires_fix_width_height": False,
    "hires_fix_use_firstpass_conds": False,
    "use_old_scheduling": False,
    "use_downcasted_alpha_bar": False,
    "refiner_switch_by_sample_steps": False,
    # extra networks
    "sd_hypernetwork": "None",
    "sd_lora": "None",
    "lora_preferred_name": "Alias from file",
    "lora_add_hashes_to_infotext": True,
    "extra_networks_default_multiplier": 1.0,
    # UI-side switches some clients read or set
    "return_grid": True,  # *
    "do_not_show_images": False,
    "send_seed": True,
    "send_size": True,
    "js_modal_lightbox": True,
    "show_progressbar": True,
    "quicksettings_list": ["sd_model_checkpoint"],
    "hide_samplers": [],
    "localization": "None",
    # infotext
    "add_model_hash_to_info": True,  # *
    "add_model_name_to_info": True,  # *
    "add_user_name_to_info": False,
    "add_version_to_infotext": True,  # *
    "disable_weights_auto_swap": True,
    "infotext_skip_pasting": [],
    "infotext_styles": "Apply if any",
    # live previews
    "live_previews_enable": True,  # *
    "live_previews_image_format": "png",
    "show_progress_grid": True,
    "show_progress_every_n_steps": 10,  # *
    "show_progress_type": "Approx cheap",
    "live_preview_content": "Prompt",
    "live_preview_refresh_period": 1000.0,
    "live_preview_fast_interrupt": False,
    # sampler parameters
    "eta_ddim": 0.0,  # *
    "eta_ancestral": 1.0,
    "ddim_discretize": "uniform",
    "s_churn": 0.0,
    "s_tmin": 0.0,
    "s_tmax": 0.0,
    "s_noise": 1.0,
    "sigma_min": 0.0,
    "sigma_max": 0.0,
    "rho": 0.0,
    "eta_noise_seed_delta": 0,
    "always_discard_next_to_last_sigma": False,
    "sgm_noise_multiplier": False,
    "uni_pc_variant": "bh1",
    "uni_pc_skip_type": "time_uniform",
    "uni_pc_order": 3,
    "uni_pc_lower_order_final": True,
    "sd_noise_schedule": "Default",
    "skip_early_cond": 0.0,
    "beta_dist_alpha": 0.6,
    "beta_dist_beta": 0.6,
    # postprocessing
    "postprocessing_enable_in_main_ui": [],
    "postprocessing_operation_order": [],
    "upscaling_max_images_in_cache": 5,
    # derived, read-only
    "sd_checkpoint_hash": "",
}

# A1111 ignores these from the API (`restrict_api`): a client must not open the server to URL fetching.
RESTRICTED_OPTIONS = frozenset({"api_enable_requests", "api_forbid_local_requests", "api_useragent", "outdir_samples",
    "outdir_txt2img_samples", "outdir_img2img_samples", "outdir_extras_samples", "outdir_grids",
    "outdir_txt2img_grids", "outdir_img2img_grids", "outdir_save", "outdir_init_images", "temp_dir"})
READ_ONLY_OPTIONS = frozenset({"sd_checkpoint_hash"})
OPTION_CHOICES: dict[str, tuple[str, ...]] = {
    "samples_format": ("png", "jpg", "jpeg", "webp"),
    "grid_format": ("png", "jpg", "jpeg", "webp"),
    "emphasis": ("Original", "No norm", "Ignore", "None"),
    "randn_source": ("GPU", "CPU", "NV"),
}

CMD_FLAGS: dict[str, Any] = {
    "api": True,
    "nowebui": False,
    "api_log": False,
    "api_server_stop": False,
    "skip_torch_cuda_test": True,
    "no_half": False,
    "no_half_vae": False,
    "precision": "autocast",
    "lowvram": False,
    "medvram": False,
    "medvram_sdxl": False,
    "xformers": False,
    "opt_sdp_attention": True,
    "disable_safe_unpickle": False,
    "enable_insecure_extension_access": False,
    "cors_allow_origins": None,
    "cors_allow_origins_regex": None,
    "subpath": None,
    "timeout_keep_alive": 30,
    "disable_console_progressbars": True,
    "hide_ui_dir_config": True,
    "freeze_settings": False,
    "ui_debug_mode": False,
    "skip_version_check": True,
}
REDACTED = "<redacted>"


class OptionsStore:
    """A1111's `opts`: defaults overlaid with what clients changed, persisted as JSON (written atomically)."""

    def __init__(self, path: Path | None, defaults: dict[str, Any]):
        self.path = Path(path) if path else None
        self.defaults = dict(defaults)
        self._changed: dict[str, Any] = {}
        self._lock = threading.Lock()
        if self.path and self.path.is_file():
            try:
                saved = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                log.warning("ignoring unreadable options file %s: %s", self.path, e)
                saved = {}
            self._changed = {k: v for k, v in (saved if isinstance(saved, dict) else {}).items() if k in self.defaults}

    def values(self) -> dict[str, Any]:
        with self._lock:
            return {**self.defaults, **self._changed}

    def get(self, key: str) -> Any:
        with self._lock:
            return self._changed.get(key, self.defaults.get(key))

    def saved(self, key: str) -> Any:
        with self._lock:
            return self._changed.get(key)

    def update(self, values: dict[str, Any]) -> None:
        if not values:
            return
        with self._lock:
            self._changed.update(values)
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                outputs.write_atomic(self.path, json.dumps(self._changed, indent=2, sort_keys=True).encode())


def coerce_option(key: str, value: Any, default: Any) -> Any:
    """Check a value against the option's default type (A1111 checks nothing and fails later)."""
    if value is None or default is None:
        return value
    try:
        if isinstance(default, bool):
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
                return value.strip().lower() in ("true", "1")
            if isinstance(value, (bool, int)) and not isinstance(value, float):
                return bool(value)
            raise ValueError
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            value = int(value)
        elif isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            value = float(value)
        elif isinstance(default, str):
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            value = str(value)
        elif isinstance(default, list) and not isinstance(value, list):
            raise ValueError
    except (TypeError, ValueError):
        raise InvalidRequest(
            f"option {key!r}: expected {type(default).__name__}, got {value!r}", details={"option": key}
        ) from None
    choices = OPTION_CHOICES.get(key)
    if choices and value not in choices:
        raise InvalidRequest(f"option {key!r}: {value!r} is not one of {', '.join(choices)}", details={"option": key})
    return value
