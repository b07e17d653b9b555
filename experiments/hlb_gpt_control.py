"""hlb-gpt v0.4.1 itself on this project's data: the control for this trainer's reference run.

Our trainer's default ends 0.05-0.07 below the single hlb-gpt run quoted in
../shared/data/README.md. That run's evals are 150 windows drawn at random on every eval, from
one seed. This script trains hlb-gpt's own main.py, unchanged, for several seeds, and at each
of its evals also scores the model on our trainer's 150 fixed windows and on every window of
books/valid, so the two trainers can be compared on the same windows and the anchor's noise
measured. --check found the one model difference (hlb-gpt's bf16 position table); --compare
sets hlb-gpt's runs against our default runs and against our runs with that table
(runs/hlb_gpt_control/hlbbf16_plain_s*.json, made with `python main.py --data-dir .data/books
--eval-data wikitext=.data/wikitext-103/wiki.valid.raw.xz --eval-every-tokens 2860800
--no-compile --position-bias hlb-bf16 --seed S --out runs/hlb_gpt_control --run-name hlbbf16_plain_sS`,
before --warmup-groups existed: today's equivalent adds `--warmup-groups hlb`, hlb-gpt's own).

hlb-gpt's code stays out of this repository: fetch it into the git-ignored .hlb_gpt/ first.
    git clone https://github.com/tysam-code/hlb-gpt .hlb_gpt && git -C .hlb_gpt checkout d848543
    python experiments/hlb_gpt_control.py --data-dir .data/books --seeds 0 1 2   # GPU
    python experiments/hlb_gpt_control.py --compare                               # the table
    python experiments/hlb_gpt_control.py --check      # CPU: same model, gradients, optimizer
"""
import argparse
import hashlib
import math
import os
import signal
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import checkpoint  # noqa: E402  (the repo root is not on the path when run as a script)
import data  # noqa: E402
import main as trainer  # noqa: E402
import runlog  # noqa: E402

HLB_COMMIT = "d848543"  # v0.4.1: "avoid grad norm soft lock @ 1k iterations"
# hlb-gpt's single run on books (../shared/data/README.md), books/valid loss at these tokens.
DATA_README_ANCHOR = {5.7e6: 4.74, 28.5e6: 4.16, 42.6e6: 3.99, 67e6: 3.97}
EVAL_TOKENS, SEQ_LEN = 153_600, 1024  # hlb-gpt's num_eval_tokens and max length; our defaults
WINDOWS_PER_FORWARD = 16


def load_hlb_module(source_path: Path, name: str, device: str = "cuda") -> types.ModuleType:
    """hlb-gpt's main.py as a fresh module, without its `__main__` block (the run and the
    inference demo): its data, model, schedules and main() exactly as written. Registered in
    sys.modules so that its torch.save(net, ...) checkpoints can pickle the classes. hlb-gpt
    hard-codes 'cuda'; device='cpu' swaps that string alone, for the CPU check."""
    source = source_path.read_text().replace("'cuda'", f"'{device}'")
    head, found, _ = source.partition('\nif __name__ == "__main__":')
    assert found, f"{source_path}: no `if __name__ == \"__main__\":` block; is it hlb-gpt v0.4.1's main.py?"
    module = types.ModuleType(name)
    module.__file__ = str(source_path)
    sys.modules[name] = module
    exec(compile(head, str(source_path), "exec"), module.__dict__)
    return module


def hlb_chunk_eval(net, inputs: torch.Tensor, targets: torch.Tensor, block_mask=None):
    """main.evaluate's eval_fn for hlb-gpt's bf16 net: summed loss, taken on float logits as
    hlb-gpt's own eval takes it, and the correct next-token count of one chunk."""
    logits = net(inputs)
    return (F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum"),
            (logits.argmax(-1) == targets).sum())


def run_seed(hlb_main: Path, seed: int, valid: torch.Tensor, log_path: Path, command: str) -> None:
    """One hlb-gpt run (its working folder must hold data.pt); the run log is rewritten after
    every eval, and says 'interrupted' if the run is stopped."""
    eval_sets = {"valid": data.eval_windows(valid, EVAL_TOKENS, SEQ_LEN),
                 "valid_all": data.eval_windows(valid, len(valid), SEQ_LEN)}
    chunk_tokens = WINDOWS_PER_FORWARD * SEQ_LEN
    eval_args = argparse.Namespace(device=valid.device.type, batch_tokens=chunk_tokens)
    log = runlog.new_run_log(
        run_name=log_path.stem, command=command,
        config={"trainer": f"hlb-gpt {HLB_COMMIT} (v0.4.1), unchanged", "seed": seed,
                "hlb_main_sha256": hashlib.sha256(hlb_main.read_bytes()).hexdigest(),
                "eval_tokens": EVAL_TOKENS, "max_seq_len": SEQ_LEN},
        env=checkpoint.environment(argparse.Namespace(device="cuda" if torch.cuda.is_available() else "cpu")),
        eval_sets={"hlb_random": "hlb-gpt's own eval: 150 windows drawn at random each time",
                   "valid": f"our trainer's {len(eval_sets['valid'][0])} fixed windows",
                   "valid_all": f"all {len(eval_sets['valid_all'][0])} windows of books/valid"})
    log["summary"] = None  # hlb-gpt reports nothing at its end: only a completed run gets one
    torch.manual_seed(seed)  # hlb-gpt seeds nothing; this fixes its init, sampling and dithering
    hlb = load_hlb_module(hlb_main, f"hlb_gpt_seed{seed}")
    own_eval = hlb.eval

    def recording_eval(net):
        # hlb-gpt's eval first, so its random draws are exactly those of an unpatched run; the
        # fixed windows draw nothing. All of it runs outside hlb-gpt's training clock.
        accuracy, loss, perplexity = own_eval(net)
        run = sys._getframe(1).f_locals  # hlb-gpt's main() keeps its counters as locals
        log["curve"].append({
            "tokens": run["tokens_seen"], "step": run["curr_step"],
            "train_seconds": round(run["total_seconds"], 3),
            "microbatches": run["discrete_sampled_microbatch_steps"], "train_loss": run["train_loss"],
            "eval": {"hlb_random": {"loss": loss, "perplexity": perplexity, "accuracy": accuracy},
                     **trainer.evaluate(net, eval_sets, chunk_tokens, eval_args, hlb_chunk_eval)}})
        runlog.write_json(log_path, log)
        return accuracy, loss, perplexity

    hlb.eval = recording_eval
    try:
        hlb.main()
    except BaseException:
        log["status"] = "interrupted"
        runlog.write_json(log_path, log)
        raise
    last = log["curve"][-1]
    log["status"] = "completed"
    log["summary"] = {"tokens": last["tokens"], "steps": last["step"],
                      "train_seconds": last["train_seconds"], "final_eval": last["eval"]}
    runlog.write_json(log_path, log)


def at_tokens(curve: list, eval_set: str, tokens: float) -> float:
    """The eval loss at a token count, linear between the two evals around it; a count at most
    2% past the last eval reads the last eval (hlb-gpt's runs end near 67M, not exactly on it)."""
    points = [(p["tokens"], p["eval"][eval_set]["loss"]) for p in curve if eval_set in p.get("eval", {})]
    if points[-1][0] < tokens <= 1.02 * points[-1][0]:
        return points[-1][1]
    for (t0, l0), (t1, l1) in zip(points, points[1:]):
        if t0 <= tokens <= t1:
            return l0 + (l1 - l0) * (tokens - t0) / (t1 - t0)
    raise ValueError(f"{tokens:.3g} tokens is outside the curve ({points[0][0]:.3g}-{points[-1][0]:.3g})")


COMPARE_TOKENS = (5.7e6, 11.44e6, 28.5e6, 42.6e6, 63.5e6, 67e6)  # the anchors, and two more


def comparison_table(hlb_logs: list, ours: dict) -> str:
    """Markdown: books/valid loss at these token counts, hlb-gpt's runs against each named set
    of this trainer's runs on the same fixed windows (mean and range, over the runs that reach
    the count), with hlb-gpt's own random-window eval, the whole split, and the data README's
    single run."""
    def values(logs, eval_set, tokens):
        reached = []
        for log in logs:
            try:
                reached.append(at_tokens(log["curve"], eval_set, tokens))
            except ValueError:  # this run ended before the count (hlb-gpt's batch varies)
                pass
        return reached

    def cell(logs, eval_set, tokens):
        v = values(logs, eval_set, tokens)
        runs = "" if len(v) == len(logs) else f" ({len(v)} runs)"
        return f"{sum(v) / len(v):.3f} ({min(v):.3f}-{max(v):.3f}){runs}"

    def mean(logs, tokens):
        v = values(logs, "valid", tokens)
        return sum(v) / len(v)

    header = ["tokens", "data README (1 run)", "hlb-gpt, its random windows", "hlb-gpt, all windows",
              "hlb-gpt, fixed windows"] + [column for name in ours for column in (f"{name}, fixed windows", "− hlb-gpt")]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for tokens in COMPARE_TOKENS:
        anchor = DATA_README_ANCHOR.get(tokens)
        cells = [f"{tokens / 1e6:g}M", f"{anchor:.2f}" if anchor else "–", cell(hlb_logs, "hlb_random", tokens),
                 cell(hlb_logs, "valid_all", tokens), cell(hlb_logs, "valid", tokens)]
        for logs in ours.values():
            cells += [cell(logs, "valid", tokens), f"{mean(logs, tokens) - mean(hlb_logs, tokens):+.3f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def our_reference_logs(paths) -> list:
    """This trainer's default runs: the H100 reference runs and the control's own."""
    return completed_logs(sorted(path for folder in paths for pattern in ("fast_s*.json", "plain_s*.json", "ours_s*.json")
                                 for path in Path(folder).glob(pattern)))


def hlb_bf16_logs(folder: Path) -> list:
    """This trainer's default runs with --position-bias hlb-bf16 (hlb-gpt's own model)."""
    return completed_logs(sorted(Path(folder).glob("hlbbf16_*.json")))


def completed_logs(paths) -> list:
    logs = [runlog.load_run_log(p) for p in paths]
    return [log for log in logs if log["status"] == runlog.COMPLETED]


# hlb-gpt's parameter names -> this trainer's.
def our_name(hlb_name: str) -> str:
    name = hlb_name.removeprefix("net_dict.").replace("attn_layers.", "blocks.")
    return {"outputs.weight": "readout.weight"}.get(name, name)


def check_equivalence(hlb_main: Path) -> list[str]:
    """On CPU, in float32: hlb-gpt's model and this trainer's default SP model, given the same
    weights and tokens, compute the same loss and gradients (the embedding's per-batch
    frequency scaling included) once ours uses hlb-gpt's bf16 position table, and each
    parameter gets the same Adam lr at chosen steps, betas, eps, weight-decay rule and
    parameter count. Returns one line per check; raises AssertionError on a mismatch."""
    os.chdir(tempfile.mkdtemp(prefix="hlb_gpt_check_"))
    torch.save({"train": torch.randint(0, 50257, (8192,), dtype=torch.int32),
                "eval": torch.randint(0, 50257, (4096,), dtype=torch.int32)}, "data.pt")
    hlb = load_hlb_module(hlb_main, "hlb_gpt_cpu", device="cpu")
    # Its attention-mask constants are bf16 (their values are kept); float32 here, as SDPA
    # wants the mask in the query's dtype.
    hlb.position_bias_base = hlb.position_bias_base.float()
    hlb.negative_infinity_matrix_base = hlb.negative_infinity_matrix_base.float()
    torch.manual_seed(0)
    net = hlb.make_net().float()
    # Tokens from a 300-token range, so that tokens repeat within the batch and the
    # embedding's scale_grad_by_freq acts; length 64, where the bf16 table is coarsest.
    tokens = torch.randint(0, 300, (4, 65), generator=torch.Generator().manual_seed(1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    hlb_loss = hlb.loss_fn(net(inputs).flatten(0, 1), targets.flatten())
    hlb_loss.backward()
    lines = []
    for position_bias in ("exact", "hlb-bf16"):
        args = trainer.resolve(trainer.parse_args(["--device", "cpu", "--no-compile", "--warmup-groups", "hlb",
                                                   "--position-bias", position_bias]))
        ours = trainer.Trainer(args, {"train": np.zeros(4096, np.uint16), "valid": np.zeros(2048, np.uint16)})
        model = ours.model
        n_params = sum(p.numel() for p in net.parameters())
        assert n_params == ours.n_params, f"parameter count {n_params:,} vs ours {ours.n_params:,}"
        with torch.no_grad():
            for name, p in net.named_parameters():
                model.get_parameter(our_name(name)).copy_(p)
        our_loss = trainer.chunk_loss(model, inputs, targets)
        our_loss.backward()
        worst = max((p.grad - model.get_parameter(our_name(name)).grad).abs().max().item()
                    / p.grad.abs().max().item() for name, p in net.named_parameters())
        lines.append(f"--position-bias {position_bias}: loss {our_loss.item():.6f} vs hlb-gpt's "
                     f"{hlb_loss.item():.6f}; gradients differ by at most {worst:.1e} (relative)")
    assert abs(hlb_loss.item() - our_loss.item()) < 1e-5 and worst < 1e-4, lines[-1]
    lines.insert(0, f"parameters: {n_params:,} in both; names map one to one")

    base_lr = 9e7 / math.log(n_params) ** 8.8  # hlb-gpt's main() computes it so
    hlb_groups = list(hlb.init_param_groups_dict(net, base_lr).values())
    hlb_opt = torch.optim.AdamW(hlb_groups)  # its lr, betas, eps and decay per group
    hlb_group_of = {id(p): g for g in hlb_opt.param_groups for p in g["params"]}
    our_group_of = {id(p): g for g in ours.optimizer.param_groups for p in g["params"]}
    schedules = [g["scheduler"] for g in hlb_groups]
    steps = (0, 1, 50, 99, 100, 101, 400, 999)
    for name, p in net.named_parameters():
        hlb_group = hlb_group_of[id(p)]
        schedule = schedules[hlb_opt.param_groups.index(hlb_group)]
        our_group = our_group_of[id(model.get_parameter(our_name(name)))]
        for step in steps:  # our clock in step-equivalents: tokens = step * batch_tokens
            hlb_lr = hlb_group["lr"] * schedule(step)
            our_lr = our_group["initial_lr"] * trainer.lr_multiplier(
                our_group["schedule"], step * args.batch_tokens, args.warmup_tokens, args.batch_tokens,
                args.warmup_groups)
            assert math.isclose(hlb_lr, our_lr, rel_tol=1e-9), f"{name} step {step}: lr {hlb_lr} vs {our_lr}"
        assert tuple(hlb_group["betas"]) == tuple(our_group["betas"]), name
        assert hlb_group["eps"] == our_group.get("eps", trainer.ADAM_EPS), name
        assert (hlb_group["weight_decay"] > 0) == (our_group["weight_decay_mult"] > 0), f"{name}: decayed in one only"
    lines.append(f"Adam lr of every parameter equal at steps {steps}; betas, eps and which parameters decay equal")

    pow_base = .007 * (.01 * math.log(n_params)) ** -4  # hlb-gpt main()'s weight_decay_pow_base
    for loss in (10.8, 6.0, 4.0, 3.0):
        hlb_decay = 1. / pow_base ** loss * 16
        assert math.isclose(hlb_decay, trainer.dynamic_weight_decay(loss, ours.decay_law_params), rel_tol=1e-9)
    lines.append("dynamic weight decay equal at losses 10.8, 6, 4, 3")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hlb-main", type=Path, default=REPO / ".hlb_gpt" / "main.py",
                        help="hlb-gpt v0.4.1's main.py (default .hlb_gpt/main.py)")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "books",
                        help="folder with one train and one valid file, as main.py's --data-dir")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "hlb_gpt_control")
    parser.add_argument("--ours", type=Path, nargs="+",
                        default=[REPO / "runs" / "h100_reference", REPO / "runs" / "hlb_gpt_control"],
                        help="folders of this trainer's default runs, for --compare "
                        "(fast_s*.json, plain_s*.json, ours_s*.json)")
    parser.add_argument("--compare", action="store_true", help="print the comparison table and exit")
    parser.add_argument("--check", action="store_true",
                        help="CPU: check hlb-gpt's and this trainer's model and optimizer agree, and exit")
    args = parser.parse_args(argv)
    args.hlb_main, args.data_dir, args.out = (path.resolve() for path in (args.hlb_main, args.data_dir, args.out))
    args.ours = [path.resolve() for path in args.ours]

    if args.compare:
        hlb_logs = completed_logs(sorted(args.out.glob("hlb_s*.json")))
        ours = {"this trainer": our_reference_logs(args.ours), "hlb-bf16 bias": hlb_bf16_logs(args.out)}
        if not hlb_logs or not all(ours.values()):
            parser.error(f"no completed runs in {args.out} or {' '.join(map(str, args.ours))}: "
                         "run the GPU part first")
        print(comparison_table(hlb_logs, ours))
        return 0

    if not args.hlb_main.is_file():
        parser.error(f"{args.hlb_main}: not found; fetch hlb-gpt v0.4.1 first (see the usage above)")
    if args.check:
        print("\n".join(check_equivalence(args.hlb_main)))
        return 0
    if not torch.cuda.is_available():
        parser.error("hlb-gpt runs on CUDA only; run this on a GPU machine")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout marks the run interrupted
    tokens = {split: data.file_tokens(data.find_split(args.data_dir, split), REPO / "data_cache")
              for split in ("train", "valid")}
    os.chdir(tempfile.mkdtemp(prefix="hlb_gpt_"))  # hlb-gpt reads data.pt, writes model.pt in its cwd
    torch.save({"train": torch.from_numpy(tokens["train"].astype(np.int32)).cuda(),
                "eval": torch.from_numpy(tokens["valid"].astype(np.int32)).cuda()}, "data.pt")
    valid = torch.from_numpy(tokens["valid"].astype(np.int64)).cuda()
    command = " ".join(["python", "experiments/hlb_gpt_control.py", *(argv or sys.argv[1:])])
    for seed in args.seeds:
        log_path = args.out / f"hlb_s{seed}.json"
        if log_path.exists() and completed_logs([log_path]):
            print(f"{log_path.name}: completed already, skipped")
            continue
        run_seed(args.hlb_main, seed, valid, log_path, command)
        print(f"{log_path.name}: done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
