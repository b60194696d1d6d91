"""Training data from feature archives: random fixed-length chunks and whole segments.

Features are read with kaldiio from ``FEAT_DIR/feats.scp`` (archives written by
``extract-feats``), never from audio, so loading is a seek and a copy per segment.

Training items are ``(utterance, label, first frame, end frame)`` regions; one batch draws its
chunk length T from ``chunk_frames`` (paper: {150, 200, 250, 300}) and every item a random
offset inside its region. A region shorter than T is padded by *repeating* it (wrap-around,
as WeSpeaker does), so a short segment still gives speech in every frame, not zeros.

Randomness is a pure function of (seed, epoch, batch index): the batch sampler yields
``(item, T, seed)`` triples and the dataset derives the offset and the SpecAugment masks from
that seed. Batches are thus identical with any number of DataLoader workers and a resumed run
can skip the batches already done and continue exactly (see sertool.nnet.trainer).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sertool.errors import SertoolError
from sertool.nnet.specaugment import SpecAugment


class DataError(SertoolError, ValueError):
    pass


@dataclass(frozen=True)
class Item:
    utt: str
    label: int
    start: int  # first frame of the region used
    end: int  # one past its last frame
    augment: bool = False  # an augmented copy (paper: original + two augmented versions)


def load_feats(rxfile: str, utt: str = "") -> np.ndarray:
    """The (frames, dim) float32 matrix of ``utt`` at ``rxfile`` (a feats.scp entry, e.g.
    ``feats.1.ark:1234``): the one reader of stored features for training, evaluation and
    embedding extraction. Unreadable, not a matrix, or NaN / infinite values -> DataError
    naming the utterance and its entry (NaN never reaches a model silently)."""
    import kaldiio

    try:
        mat = np.asarray(kaldiio.load_mat(rxfile), dtype=np.float32)
    except Exception as err:  # noqa: BLE001 - kaldiio raises many types
        raise DataError(f"utterance {utt}: cannot read features {rxfile}: {err}") from err
    if mat.ndim != 2 or mat.shape[0] == 0:
        raise DataError(f"utterance {utt}: features {rxfile} have shape {mat.shape}")
    finite = np.isfinite(mat)
    if not finite.all():
        frame, dim = (int(i[0]) for i in np.nonzero(~finite))
        raise DataError(f"utterance {utt}: features {rxfile} hold {int(mat.size - finite.sum())} "
                        f"NaN or infinite value(s) (first at frame {frame}, dimension {dim}: "
                        f"{mat[frame, dim]}); extract them again (sertool extract-feats) or "
                        "drop the utterance")
    return mat


def repeat_pad(mat: np.ndarray, frames: int) -> np.ndarray:
    """Repeat ``mat`` (T, F) along time until it has ``frames`` frames."""
    reps = -(-frames // mat.shape[0])
    return np.tile(mat, (reps, 1))[:frames]


class ChunkDataset(torch.utils.data.Dataset):
    """Index with ``(item index, T, seed)``: a (T, F) chunk at a seeded random offset."""

    def __init__(self, items: Sequence[Item], feats: Mapping[str, str],
                 augment: SpecAugment | None = None):
        self.items = list(items)
        self.feats = dict(feats)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        index, frames, seed = key
        item = self.items[index]
        mat = load_feats(self.feats[item.utt], item.utt)[item.start:item.end]
        rng = np.random.default_rng(seed)
        if mat.shape[0] <= frames:
            chunk = repeat_pad(mat, frames)
        else:
            offset = int(rng.integers(0, mat.shape[0] - frames + 1))
            chunk = mat[offset:offset + frames]
        x = torch.tensor(chunk)  # copy: kaldiio may hand out read-only memory
        if item.augment and self.augment is not None:
            gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
            x = self.augment(x, generator=gen)
        return x, item.label


def collate(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch])


def chunk_loader(dataset: ChunkDataset, sampler: ChunkBatchSampler, num_workers: int,
                 device: str, seed: int) -> torch.utils.data.DataLoader:
    """The trainer's DataLoader over one epoch's batches (pinned memory for a GPU)."""
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
        pin_memory=device.startswith("cuda"), generator=torch.Generator().manual_seed(seed))


class ChunkBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(item, T, seed)`` for one epoch; T drawn per batch.

    Order: a permutation seeded by (seed, epoch), split between DDP ranks like
    ``DistributedSampler(drop_last=True)`` (rank r takes every world-th item, equal counts);
    the last incomplete batch is dropped (it would upset batch norm). ``skip`` leaves out the
    first batches (a resumed epoch). ``draw`` (one probability per item, summing to 1;
    sertool.nnet.balance.balanced_probabilities): the epoch's order is ``n_items`` draws with
    replacement by those probabilities instead of a permutation (still a function of seed
    and epoch, so resume holds).
    """

    def __init__(self, n_items: int, batch_size: int, chunk_frames: Sequence[int], seed: int,
                 epoch: int, rank: int = 0, world: int = 1, skip: int = 0,
                 draw: np.ndarray | None = None):
        self.n_items, self.batch_size = n_items, batch_size
        self.draw = draw
        self.chunk_frames = list(chunk_frames)
        self.seed, self.epoch, self.rank, self.world, self.skip = seed, epoch, rank, world, skip

    def batches_per_epoch(self) -> int:
        return (self.n_items // self.world) // self.batch_size

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.skip)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = (rng.permutation(self.n_items) if self.draw is None
                 else rng.choice(self.n_items, size=self.n_items, p=self.draw))
        per_rank = self.n_items // self.world
        mine = order[self.rank::self.world][:per_rank]
        lengths = rng.choice(self.chunk_frames, size=max(1, self.batches_per_epoch()))
        item_seeds = rng.integers(0, 2**62, size=self.n_items)
        for b in range(self.skip, self.batches_per_epoch()):
            idx = mine[b * self.batch_size:(b + 1) * self.batch_size]
            yield [(int(i), int(lengths[b]), int(item_seeds[i])) for i in idx]


class SegmentDataset(torch.utils.data.Dataset):
    """Whole regions (variable length) for evaluation; batch size 1."""

    def __init__(self, items: Sequence[Item], feats: Mapping[str, str]):
        self.items = list(items)
        self.feats = dict(feats)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.items[index]
        mat = load_feats(self.feats[item.utt], item.utt)[item.start:item.end]
        return torch.tensor(mat), item.label


def expand_copies(items: Sequence[Item], copies: int) -> list[Item]:
    """Each original item plus ``copies`` augmented versions (the paper's setting)."""
    out: list[Item] = []
    for it in items:
        out.append(it)
        out += [Item(it.utt, it.label, it.start, it.end, True) for _ in range(copies)]
    return out
