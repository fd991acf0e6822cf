#!/usr/bin/env python3
"""Writes the long-context model's tokenizer: models/podkv-ref's byte-level BPE
with numbers split into single digits.

    python3 scripts/make_digit_tokenizer.py [IN_TOKENIZER_JSON] [OUT_TOKENIZER_JSON]
    (defaults: models/podkv-ref/tokenizer.json -> configs/podkv-ref-digits/tokenizer.json)

Why: podkv-ref's pre-tokenizer is Llama 3's, which cuts a number into chunks of
up to three digits ("5143009" -> "514" "300" "9") that BPE then merges into
digit pairs. A small model copying a 7-digit needle often ended it with the pair
of its last digit ("51430099": "99" for "9"), the one failure mode left in
docs/long-model (session of 2026-12-02). Split into single digits, as Llama 2's
SentencePiece (split_digits) does, copying a number is copying one token per
digit. (Tried in docs/long-model/digits-experiment: it did not remove the
slips, see there.) Only the Split regex changes (\\p{N}{1,3} -> \\p{N}): the vocabulary and
merges stay, so the ids of everything but multi-digit numbers are unchanged;
the digit-pair tokens are then never produced. Standard library only.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LLAMA3_NUMBERS = r"\p{N}{1,3}"
SINGLE_DIGITS = r"\p{N}"


def main():
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "models/podkv-ref/tokenizer.json"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "configs/podkv-ref-digits/tokenizer.json"
    tok = json.loads(src.read_text(encoding="utf-8"))
    pre = tok.get("pre_tokenizer") or {}
    splits = [p for p in pre.get("pretokenizers", []) if p.get("type") == "Split"]
    if len(splits) != 1 or LLAMA3_NUMBERS not in splits[0]["pattern"].get("Regex", ""):
        sys.exit(f"{src}: expected one Split pre-tokenizer whose regex has {LLAMA3_NUMBERS}")
    regex = splits[0]["pattern"]["Regex"]
    splits[0]["pattern"]["Regex"] = regex.replace(LLAMA3_NUMBERS, SINGLE_DIGITS)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(tok, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {dst}: numbers split into single digits ({regex.count(LLAMA3_NUMBERS)} occurrence replaced)")


if __name__ == "__main__":
    main()
