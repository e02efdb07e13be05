"""Which CLIP tokens belong to which word of a prompt, for word-level heat maps (DAAM).

CLIP's BPE splits rare words into several tokens (``"shinning"`` -> ``"sh"``, ``"inning</w>"``) and marks the
last token of every word with ``</w>``. A word's heat map is the mean of its tokens' maps; a word that
appears several times uses every occurrence unless one is chosen.

The text encoder reads at most ``tokenizer.model_max_length`` tokens (77 for CLIP: a start token, 75 prompt
tokens, an end token); the pipeline cuts longer prompts. Words past the cut have no heat map, and asking for
one raises :class:`WordCutOffError` instead of returning the map of some other token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

WORD_END = "</w>"


class WordNotInPromptError(ValueError):
    """Raised when a word asked for is not in the prompt; the message lists the prompt's words."""


class WordCutOffError(WordNotInPromptError):
    """Raised when a word is in the prompt only past the text encoder's token limit, where the prompt was cut."""


def kept_token_count(tokenizer: Any) -> int:
    """How many prompt tokens the text encoder sees: ``model_max_length`` less the start and end tokens (75)."""
    return int(tokenizer.model_max_length) - 2


@dataclass(frozen=True)
class PromptWord:
    """A word of the prompt and the positions of its tokens in the text encoder's input.

    ``token_positions`` count the start token, so position 1 is the first token after ``<|startoftext|>``:
    they index the rows of a ``(77, H, W)`` attention map directly.
    """

    text: str
    token_positions: tuple[int, ...]


def _clean(token: str) -> str:
    return token.replace(WORD_END, "")


def prompt_words(tokenizer: Any, prompt: str) -> list[PromptWord]:
    """Split ``prompt`` into the words CLIP sees (lower-cased, punctuation as its own word), with token positions."""
    words: list[PromptWord] = []
    pieces: list[str] = []
    positions: list[int] = []
    for position, token in enumerate(tokenizer.tokenize(prompt.lower()), start=1):
        pieces.append(_clean(token))
        positions.append(position)
        if token.endswith(WORD_END):
            words.append(PromptWord("".join(pieces), tuple(positions)))
            pieces, positions = [], []
    if pieces:
        words.append(PromptWord("".join(pieces), tuple(positions)))
    return words


def word_token_positions(
    tokenizer: Any,
    prompt: str,
    word: str,
    word_idx: int | None = None,
    offset_idx: int = 0,
    occurrence: int | None = None,
) -> list[int]:
    """Rows of the attention map that belong to ``word`` (start token counted, as in daam 0.2.0).

    Args:
        tokenizer: the pipeline's CLIP tokenizer.
        prompt: the prompt the heat maps were made for.
        word: a word (or several, e.g. ``"teddy bear"``) of the prompt; case-insensitive.
        word_idx: use this token position (0-based, start token not counted) instead of searching.
        offset_idx: shift every found position by this many tokens (daam's ``offset_idx``).
        occurrence: for a word that appears several times, the 0-based occurrence to use (default: all).

    Occurrences that do not fit entirely within the tokens the text encoder read are left out.

    Raises:
        WordNotInPromptError: the word is not in the prompt (the message lists the prompt's words), or
            ``occurrence`` is larger than the number of times it appears.
        WordCutOffError: the word (or the occurrence asked for, or ``word_idx``) lies past the token limit.
    """
    kept = kept_token_count(tokenizer)
    if word_idx is not None:
        if not 0 <= word_idx < kept:
            raise WordCutOffError(
                f"word_idx={word_idx} is outside the {kept} prompt tokens the text encoder reads (0..{kept - 1})."
            )
        return [word_idx + 1]
    tokens = [_clean(t) for t in tokenizer.tokenize(prompt.lower())]
    wanted = [_clean(t) for t in tokenizer.tokenize(word.lower())]
    if not wanted:
        raise WordNotInPromptError("The word to look up is empty; give one of the prompt's words.")
    starts = [i + offset_idx for i in range(len(tokens)) if tokens[i : i + len(wanted)] == wanted]
    if not starts:
        known = ", ".join(dict.fromkeys(w.text for w in prompt_words(tokenizer, prompt)))
        raise WordNotInPromptError(f"{word!r} is not in the prompt {prompt!r}. Its words are: {known}.")
    if occurrence is not None:
        if not 0 <= occurrence < len(starts):
            raise WordNotInPromptError(
                f"{word!r} appears {len(starts)} time(s) in the prompt; occurrence must be 0..{len(starts) - 1}."
            )
        starts = [starts[occurrence]]
    kept_starts = [start for start in starts if start + len(wanted) <= kept]
    if not kept_starts:
        which = f"occurrence {occurrence} of {word!r}" if occurrence is not None else repr(word)
        raise WordCutOffError(
            f"No heat map for {which}: it comes after the first {kept} tokens of the prompt (which has "
            f"{len(tokens)}), where the pipeline cut the prompt for the text encoder ({tokenizer.model_max_length} "
            "tokens with start and end), so the model never read it. Shorten the prompt or move the word forward."
        )
    return [start + i + 1 for start in kept_starts for i in range(len(wanted))]
