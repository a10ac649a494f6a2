"""``advkit train-denoiser``: train Add / Filt / multi-head / PA-Filt / KPN denoisers from pair stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from advkit.cli._common import DeviceOption, JsonOption, SeedOption, device_of, emit, get_options, progress_bar


def register(app: typer.Typer) -> None:
    @app.command("train-denoiser")
    def train_denoiser_cmd(
        ctx: typer.Context,
        train: Annotated[Path, typer.Option("--train", help="Training pair store (.h5).")],
        out: Annotated[Path, typer.Option("--out", help="Output folder for best/last checkpoints.")],
        arch: Annotated[
            str, typer.Option("--arch", help="unet-add, unet-filt, unet-filt-multihead, pafilt or kpn.")
        ] = "unet-filt",
        loss: Annotated[str, typer.Option("--loss", help="img (L1 to the clean image) or sem (L1 of features).")] = "img",
        model: Annotated[
            str | None, typer.Option("--model", help="Threat model: for --loss sem, PA-Filt fusion and val accuracy.")
        ] = None,
        weights: Annotated[Path | None, typer.Option("--weights", help="Weights file for --model.")] = None,
        feature_layer: Annotated[
            str | None, typer.Option("--feature-layer", help="Layer for --loss sem (default: the model's last stage).")
        ] = None,
        val: Annotated[Path | None, typer.Option("--val", help="Validation pair store.")] = None,
        val_per_eps: Annotated[int, typer.Option("--val-per-eps", help="Validation rows per radius.")] = 200,
        epochs: Annotated[int, typer.Option("--epochs", help="Epochs (PA-Filt: of the Y-Net stage).")] = 10,
        fusion_epochs: Annotated[int, typer.Option("--fusion-epochs", help="PA-Filt fusion-stage epochs.")] = 2,
        fusion_loss: Annotated[
            str, typer.Option("--fusion-loss", help="PA-Filt fusion loss: ce (the paper's cross-entropy) or error "
                              "(expected misclassification on the clamped output) or choice (W learns which "
                              "branch the classifier gets right).")
        ] = "ce",
        fusion_input: Annotated[
            str, typer.Option("--fusion-input", help="What PA-Filt's fusion net reads: uncertainty (the paper's "
                              "[U_sl, U_m]) or uncertainty+image (also the input image).")
        ] = "uncertainty",
        batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
        lr: Annotated[float, typer.Option("--lr", help="Adam learning rate (cosine schedule).")] = 1e-3,
        width: Annotated[int, typer.Option("--width", help="U-Net width multiplier (channels of block 1).")] = 16,
        kernel_size: Annotated[int, typer.Option("--kernel-size", help="K of the predicted K×K kernels.")] = 5,
        train_eps: Annotated[
            str | None, typer.Option("--train-eps", help="Train only on these radii of the store (comma list).")
        ] = None,
        init: Annotated[
            Path | None, typer.Option("--init", help="Start from this checkpoint's weights (same arch, or a "
                                      "unet-filt for --arch pafilt); with --arch pafilt --epochs 0, train only "
                                      "the fusion net.")
        ] = None,
        freeze: Annotated[
            str | None, typer.Option("--freeze", help="Keep these parts fixed (comma list "
                                     "of parameter-name prefixes, e.g. encoder,decoder_sl,head_sl).")
        ] = None,
        amp: Annotated[str, typer.Option("--amp", help="none or bf16 autocast.")] = "none",
        save_every: Annotated[float, typer.Option("--save-every", help="Seconds between mid-epoch saves.")] = 300.0,
        resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.")] = False,
        overwrite: Annotated[bool, typer.Option("--overwrite", help="Start over in a non-empty OUT.")] = False,
        device: DeviceOption = None,
        seed: SeedOption = None,
        json_out: JsonOption = False,
    ) -> None:
        """Train a denoiser; writes OUT/best.safetensors, OUT/last.safetensors (+ .json) and resume state.

        Under `torchrun --nproc-per-node N advkit train-denoiser ...` it trains with DDP.
        """
        from advkit.cli._common import stderr_console
        from advkit.errors import UsageError
        from advkit.train import TrainConfig, train_denoiser
        from advkit.utils import parse_float_list, split_list

        opts = get_options(ctx, device=device, seed=seed, json=json_out)
        if resume and overwrite:
            raise UsageError("--resume and --overwrite exclude each other")
        cfg = TrainConfig(
            arch=arch, loss=loss, train=str(train), val=str(val) if val else None, out=str(out), model=model,
            weights=str(weights) if weights else None, feature_layer=feature_layer, width=width,
            kernel_size=kernel_size, epochs=epochs, fusion_epochs=fusion_epochs, fusion_loss=fusion_loss,
            fusion_input=fusion_input,
            batch_size=batch_size, lr=lr,
            amp=amp, seed=opts.seed, val_per_eps=val_per_eps, save_every_s=save_every,
            train_eps=parse_float_list(train_eps, "eps") if train_eps else None,
            init=str(init) if init else None,
            freeze=split_list(freeze) or None,
        )
        console = stderr_console()

        def on_epoch(report) -> None:  # noqa: ANN001
            if opts.quiet:
                return
            line = f"epoch {report.epoch} ({report.stage}): loss {report.train_loss:.5f}, {report.seconds:.0f} s"
            if report.val:
                if "acc_defended_mean" in report.val:
                    line += (f", val acc {report.val['acc_defended_mean']:.4f} (mean over radii), clean "
                             f"{report.val['acc_clean_defended']:.4f}")
                line += f", val PSNR {report.val['psnr']:.2f} dB"
            console.print(line)

        with progress_bar(opts, f"train {arch}", unit="step") as on_progress:
            record = train_denoiser(cfg, device=device_of(opts), resume=resume, overwrite=overwrite,
                                    on_progress=on_progress, on_epoch=on_epoch)
        emit(opts, record, lambda c: c.print(f"checkpoints in {record['out']}; best epoch "
                                             f"{record['best']['epoch'] if record['best'] else '—'}"))
