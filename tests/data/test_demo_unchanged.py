"""The demo files that existed before the multi-domain data (issue 12 §3) stay byte-identical: the main demo's
and the code demo's calibrated numbers depend on exactly these rows. The digests were computed from the code
before the new domains were added; a change here is a change to every demo result in the docs."""

import hashlib

import pytest

from alignpipe.data.demo import write_demo_data

DIGESTS = {
    0: {
        "sft_train": "991e3b883085785d0e775a5250b229ddee36a6e9092032b51e4f9e4b8001212f",
        "sft_eval": "05098ef4dabfef7abe87425cdd11cdd31d811bffc56527a5240de9ec9eef42c5",
        "preference_train": "89d51b81dc8408aac274190fa5f6f73412c9dc6cb58d936ecd069778bfef9c28",
        "preference_eval": "52a763dd1ec29573dea0d505d24a7231cb08774ab8a3fa8725acbbe08774e879",
        "rl_train": "69fd25d4df02f0dd819148edc7902952b4657df4fe37268cfd0b2b02654de1fc",
        "eval": "7c369b8c2434815362eac76f6169279ad8e26da874a70dcac7a007999a1b7176",
        "code_sft_train": "8e949e7538e8f1de5cea1a365679274a193340121f767474d9777a7a0507d60e",
        "code_rl_train": "58ed3e3a7cc5597848107ca259b9230ff3c9608793d1cb992f82152b7ea127dc",
        "code_eval": "e6dcdd22280edf01eecf152a3d71b3b75022afe5ec93f547e82c817636734028",
    },
    1: {
        "sft_train": "5fdb7eb60415d374ad2316506c6c99b41e1ac311bbbcb1253b83ddfda4f85c22",
        "sft_eval": "e7485f8840d40127d67d4c090f176a64a3fe41c41aba82891f665494a052ca01",
        "preference_train": "5a1a1ef66ef473c5ceba1d689e7fd56f842e63d96ab92f55b19b65835e7a2767",
        "preference_eval": "ba5bc5372ae167e4dab16ef3b4da139ee426b7d15ee3245cbf7774b77a5f2223",
        "rl_train": "d1a0fc415ea3878b5d6efdb7a70763aef9522bcf883af003a07978d70a04bd78",
        "eval": "392b1a92343b76cec13ae727e8a21959628656a645586c1c897bfdf3c48e05f7",
        "code_sft_train": "2a732872298ae2bc5539ed8831c065aa645ec8bb5479197d3b0425cfa93f5807",
        "code_rl_train": "eee53d8e9da2cfcca102186cd9ebb15c5f1475ba41d48261ae112f33199788f9",
        "code_eval": "c78464e11fc691a2f4b44c43213bef73b37ed69527ece5ff5e1ab788e2584ed0",
    },
}


@pytest.mark.parametrize("seed", sorted(DIGESTS))
def test_existing_demo_files_are_byte_identical(tmp_path, seed):
    files = write_demo_data(tmp_path, seed=seed)
    got = {name: hashlib.sha256(open(files[name], "rb").read()).hexdigest() for name in DIGESTS[seed]}
    assert got == DIGESTS[seed]
