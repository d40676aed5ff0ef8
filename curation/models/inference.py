"""Batch inference with decoding overlapped with compute.

Decoding (:func:`curation.imaging.decode_rgb`) and resizing run in worker *processes* of a
persistent ``torch.utils.data.DataLoader`` when the model is on a GPU (threads there are held back
by the GIL: 14 decode threads reached half the rate of 14 processes), and in worker threads when it
is on the CPU (no inter-process copies; the cores are busy with the model anyway). Each worker turns
a small chunk of images into one uint8 ``[n, H, W, 3]`` tensor (in shared memory for processes,
pinned by the loader's pin-memory thread on CUDA); the calling thread gathers chunks into model
batches, moves them to the device (non-blocking), normalises there and runs the model under
autocast. On CUDA the results of batch ``k`` are copied back only after batch ``k + 1`` is
launched, so the GPU does not wait for the host.

Worker processes are started once and reused by every :meth:`BatchEmbedder.embed` call: the
images to decode travel to them as sampler items (a loader per image: a picklable callable returning
bytes). ``num_workers=0`` decodes in the calling thread (tests, tiny jobs).
"""

from __future__ import annotations

import logging
import pickle
import sys
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from curation.config import ConfigError
from curation.cpus import affinity_cpus
from curation.imaging import DEFAULT_MAX_PIXELS, ImageRejected, decode_rgb
from curation.models.embedder import Embedder
from curation.models.preprocess import (
    Preprocessing,
    decode_floor,
    image_to_uint8,
    normalize_batch,
    rescale_batch,
)

logger = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
STATUS_READ_ERROR = "read_error"
STATUS_EMBED_ERROR = "embed_error"


@dataclass(frozen=True)
class InferenceOptions:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 on CUDA, float32 on CPU) | float32 | bf16 | fp16
    batch_size: int = 64  # images per forward pass
    # decode workers (0: decode in the calling process); None: from the machine (decode_workers)
    num_workers: int | None = None
    chunk_size: int = 16  # images per decode task (small: the first batch arrives early)
    backend: str = "auto"  # decode workers: process | thread | auto (threads on a CPU device)
    channels_last: bool | None = None  # None: on for conv nets
    max_pixels: int = DEFAULT_MAX_PIXELS
    # Decode JPEGs at a reduced DCT scale when the model needs fewer pixels (never below its size).
    reduced_jpeg_decode: bool = True


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(
            f"device {name!r} is not a torch device (auto, cpu, cuda, cuda:N)"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {name!r} asked for but CUDA is not available; use device=cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(
            f"unknown dtype {name!r}; expected auto or one of {sorted(DTYPES)}"
        ) from None


@dataclass
class EmbedResult:
    """Embeddings of the images that worked, which ones they are, and why the others failed."""

    embeddings: np.ndarray  # [n_ok, dim] float32, in input order
    positions: np.ndarray  # [n_ok] int64: input index of each embedding
    failures: list[tuple[int, str, str]] = field(default_factory=list)  # (index, status, message)


def prepare_image(
    loader: Callable[[], bytes | None],
    prep: Preprocessing,
    max_pixels: int,
    reduced_jpeg_decode: bool = False,
) -> np.ndarray:
    """Read, decode and resize one image; raises :class:`ImageRejected` with the reason."""
    try:
        data = loader()
    except OSError as exc:
        raise ImageRejected(STATUS_READ_ERROR, f"{type(exc).__name__}: {exc}") from exc
    draft = decode_floor(prep) if reduced_jpeg_decode else None
    return image_to_uint8(decode_rgb(data, max_pixels, draft_size=draft), prep)


class _DecodeTasks(Dataset):
    """Items are ``(position, loader)`` pairs sent by the sampler; an item decodes one image."""

    def __init__(self, prep: Preprocessing, max_pixels: int, reduced_jpeg_decode: bool):
        self.prep, self.max_pixels = prep, max_pixels
        self.reduced_jpeg_decode = reduced_jpeg_decode

    def __len__(self) -> int:  # items come from the sampler, not from an index range
        return 0

    def __getitem__(self, task):
        position, loader = task
        try:
            pixels = prepare_image(loader, self.prep, self.max_pixels, self.reduced_jpeg_decode)
            return position, pixels, None
        except ImageRejected as exc:
            return position, None, (exc.status, str(exc))
        except Exception as exc:  # a per-image boundary: record it, keep going
            return position, None, (STATUS_EMBED_ERROR, f"{type(exc).__name__}: {exc}")


def _collate(items) -> dict:
    """A chunk: one uint8 tensor per image shape (with positions), plus the failures."""
    groups: dict[tuple[int, ...], tuple[list[int], list[np.ndarray]]] = {}
    failures = []
    for position, array, failure in items:
        if array is None:
            failures.append((position, *failure))
        else:
            positions, arrays = groups.setdefault(array.shape, ([], []))
            positions.append(position)
            arrays.append(array)
    return {
        "groups": [(p, torch.from_numpy(np.stack(a))) for p, a in groups.values()],
        "failures": failures,
    }


class _Chunks:
    """A batch sampler whose chunks are replaced before each pass (persistent workers)."""

    def __init__(self) -> None:
        self.chunks: list[list] = []

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


def usable_cpus() -> int:
    """CPUs this process may use: in a Ray worker the CPUs Ray assigned to it (actors share the
    host), else its affinity mask (which containers restrict)."""
    ray = sys.modules.get("ray")  # only when something here already uses Ray
    if ray is not None and ray.is_initialized():
        try:
            assigned = ray.get_runtime_context().get_assigned_resources().get("CPU")
        except AssertionError:  # Ray's answer on the driver: it is not a worker
            assigned = None
        if assigned:
            return max(1, int(assigned))
    return affinity_cpus()


def decode_workers(device: torch.device) -> int:
    """Decode workers for ``device`` from the machine: on a CPU device one thread per usable
    CPU (decoding releases the GIL, and the forward waits for the batch anyway); beside a GPU
    one process per usable CPU but two (the driver thread feeding the GPU and the loader keep
    theirs), at least two. Measured: 14 decode processes on a 16-core H200 host; 2 threads on
    2 cores (benchmarks/bench_embed.py)."""
    cpus = usable_cpus()
    return cpus if device.type == "cpu" else max(2, cpus - 2)


class BatchEmbedder:
    """Runs an :class:`Embedder` over images given as byte loaders (picklable callables)."""

    def __init__(self, embedder: Embedder, options: InferenceOptions | None = None):
        options = options or InferenceOptions()
        if options.batch_size <= 0 or (options.num_workers or 0) < 0 or options.chunk_size <= 0:
            raise ValueError("batch_size and chunk_size must be positive and num_workers >= 0")
        self.embedder = embedder
        self.device = resolve_device(options.device)
        if options.num_workers is None:
            options = replace(options, num_workers=decode_workers(self.device))
        self.options = options
        self.dtype = resolve_dtype(options.dtype, self.device)
        self.channels_last = (
            embedder.is_convnet if options.channels_last is None else options.channels_last
        )
        model = embedder.model.to(self.device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.scales = embedder.scales or (embedder.preprocessing.size,)
        self._chunks = _Chunks()
        workers = options.num_workers
        self._threads = None
        if options.backend not in ("auto", "process", "thread"):
            raise ValueError(f"backend must be auto, process or thread, got {options.backend!r}")
        backend = options.backend
        if backend == "auto":
            # Measured: on a 16-core GPU host 14 decode threads reached 1,030 images/s and 14
            # processes 2,020 (the GIL); on a 2-core CPU box threads were ~5% faster (no IPC).
            backend = "thread" if self.device.type == "cpu" else "process"
        if backend == "thread" and workers:
            self._threads = ThreadPoolExecutor(workers)
            workers = 0
        # About three model batches decoded ahead, whatever the number of workers.
        ahead = max(2, -(-3 * options.batch_size // (options.chunk_size * max(1, workers))))
        self._loader = DataLoader(
            _DecodeTasks(embedder.preprocessing, options.max_pixels, options.reduced_jpeg_decode),
            batch_sampler=self._chunks,
            collate_fn=_collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            prefetch_factor=ahead if workers else None,
            pin_memory=self.device.type == "cuda",
        )

    def close(self) -> None:
        """Stop the decode workers (they also stop with the process)."""
        self._loader = None
        if self._threads is not None:
            self._threads.shutdown(wait=True)

    def _prepared(self):
        """Decoded chunks in order: from the worker processes, or from threads."""
        if self._threads is None:
            yield from self._loader
            return
        decode = self._loader.dataset.__getitem__
        pending: deque[Future] = deque()
        for chunk in self._chunks.chunks:
            pending.append(self._threads.submit(lambda c: _collate([decode(t) for t in c]), chunk))
            if len(pending) > 2 * self.options.num_workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

    # ---------------------------------------------------------------- compute
    def forward_uint8(self, pixels: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """``[B, H, W, 3]`` uint8 (or a list of such chunks) -> ``[B, dim]`` float32 on the
        device; asynchronous on CUDA."""
        chunks = pixels if isinstance(pixels, list) else [pixels]
        chunks = [c.to(self.device, non_blocking=True) for c in chunks]
        batch = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
        x = normalize_batch(
            batch, self.embedder.preprocessing, torch.float32, channels_last=self.channels_last
        )
        autocast = torch.autocast(
            self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32
        )
        with torch.inference_mode(), autocast:
            if len(self.scales) == 1:
                return self.model(x).float()
            total = sum(self.model(rescale_batch(x, s)).float() for s in self.scales)
            return F.normalize(total, dim=-1)

    # ---------------------------------------------------------------- driver
    def embed(self, loaders: Sequence[Callable[[], bytes | None]]) -> EmbedResult:
        """Embed every image; a failed read or decode is reported, never raised."""
        if self._loader is None:
            raise RuntimeError("BatchEmbedder is closed")
        size, chunk = self.options.batch_size, self.options.chunk_size
        if self.options.num_workers and self._threads is None and loaders:
            try:  # an unpicklable loader would be dropped by the queue feeder: a silent hang
                pickle.dumps(loaders[0])
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                raise TypeError(
                    f"decode workers need picklable loaders (module-level functions or "
                    f"functools.partial of them), got {loaders[0]!r}: {exc}"
                ) from exc
        tasks = list(enumerate(loaders))
        self._chunks.chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
        pending: dict[tuple, tuple[list[int], list[torch.Tensor], int]] = {}
        launched: list[tuple[list[int], torch.Tensor]] = []
        done_positions: list[np.ndarray] = []
        done: list[np.ndarray] = []
        failures: list[tuple[int, str, str]] = []

        def launch(shape) -> None:
            positions, tensors, _ = pending.pop(shape)
            launched.append((positions, self.forward_uint8(tensors)))
            while len(launched) > 1:  # copy back all but the newest: the GPU stays busy
                collect()

        def collect() -> None:
            positions, output = launched.pop(0)
            done_positions.append(np.asarray(positions, dtype=np.int64))
            done.append(output.cpu().numpy())

        for prepared in self._prepared():
            failures.extend(prepared["failures"])
            for positions, tensor in prepared["groups"]:
                shape = tuple(tensor.shape[1:])
                group = pending.setdefault(shape, ([], [], 0))
                group[0].extend(positions)
                group[1].append(tensor)
                pending[shape] = (group[0], group[1], group[2] + len(tensor))
                if pending[shape][2] >= size:
                    launch(shape)
        for shape in list(pending):
            launch(shape)
        while launched:
            collect()
        if not done:
            dim = self.embedder.dim
            return EmbedResult(np.empty((0, dim), np.float32), np.empty(0, np.int64), failures)
        positions = np.concatenate(done_positions)
        order = np.argsort(positions, kind="stable")
        failures.sort()
        return EmbedResult(np.concatenate(done)[order], positions[order], failures)
