"""The trusted side's verdicts: a check's record compared with bnlib's reference, mistakes named."""
