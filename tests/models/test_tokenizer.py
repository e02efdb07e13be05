from transformers import CLIPTokenizer

from nbhelpers.models.tokenizer import CLIP_VOCAB_SIZE, clip_vocab_and_merges, write_clip_tokenizer


def test_tokenizer_gives_the_real_checkpoint_ids(tmp_path):
    folder = write_clip_tokenizer(tmp_path / "tokenizer")
    assert {p.name for p in folder.iterdir()} >= {"vocab.json", "merges.txt", "tokenizer_config.json"}
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    ids = tokenizer("a photograph of an astronaut riding a horse").input_ids
    assert ids == [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert len(tokenizer) == CLIP_VOCAB_SIZE
    assert tokenizer.model_max_length == 77
    padded = tokenizer("sks dog", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[0] == 49406 and padded[-1] == 49407


def test_vocabulary_shape():
    vocab, merges = clip_vocab_and_merges()
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
