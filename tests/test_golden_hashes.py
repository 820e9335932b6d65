"""A task's version pins its bytes (issue 24.3).

For every task of every suite, a small split is made through the same code path as `bench run`
(``ensure_split`` for simulated splits, ``ensure_real_lens_split`` for the known lenses,
``load_task_data`` for the photo-z catalogues) and its content hash, the one the reports print,
is compared with the table below, keyed by (task name, task version, simulator version; None for
tasks the simulator does not make).

IF THIS FAILS, YOU CHANGED A TASK'S BYTES: bump the task's ``version`` in bench/tasks.py (and
``SIMULATOR_VERSION`` in datasets/simulate.py when the simulator's own output changed), regenerate
the committed reports made from that task (`bench report --check` lists them), then add the new
key and hashes to the table. Never change the hashes of an existing key.

The simulator's bytes also depend on the CPU (torch's vectorised exp, log, sqrt, ... go through
MKL, whose code path and last bits differ by CPU: bench/splits.py, ``MACHINE_ARITHMETICS``), so
GOLDEN_HASHES holds those of the machines where the reports were made, and
GOLDEN_HASHES_ELSEWHERE those of each other arithmetic met, for the keys where they differ. A
version bump made on one kind of machine leaves the others' tables without the new key; the test
then skips there until someone on such a machine adds it (from the same commit's code).
"""

from __future__ import annotations

import dataclasses

import pytest
from lensbench.bench import cli, splits, tasks
from lensbench.bench.report import simulated, write_report
from lensbench.bench.runner import run_suite
from lensbench.bench.splits import ensure_split
from lensbench.bench.tasks import all_tasks, get_suite
from lensbench.datasets import simulate
from lensbench.datasets.simulate import SIMULATOR_VERSION

# Cutouts per simulated split: more than one noise chunk (32 systems) and both classes.
GOLDEN_N = 48
GOLDEN_PROFILE = "golden"

# (task, task version, simulator version or None) -> role -> sha256 content hash.
GOLDEN_HASHES = {
    ("design-hsc", 1, 1): {
        "train": "b966f9834ecf1835d050a463ec72e141fc645272b66f825206ffa6cf51e10fbd",
        "test": "3a54407c267348bf3e2cba3ca4cf714cd989e66b86a557ec309d35bf0081805a",
        "real": "7b8dd6bc9fd72f256f6f068e315e4b7b041c7be69331032ac528451e5dbaa7d5"},
    ("design-hsc", 2, 1): {
        "train": "b966f9834ecf1835d050a463ec72e141fc645272b66f825206ffa6cf51e10fbd",
        "test": "3a54407c267348bf3e2cba3ca4cf714cd989e66b86a557ec309d35bf0081805a",
        "real": "3639983e34390963e7bf4f997e8885ca92fb28e677d4d6a37de5059feb6a1a06"},
    ("hsc-holismokes", 2, 1): {
        "train": "d8b1e92ca9a73f17647cffd2ec76b8b4dbf1cc243a95cc7475875eef90a4a4aa",
        "test": "41ade648676c4dc035bfce648a62802d04befe93d05d04259bf53f73eebcbd3a"},
    ("hsc-holismokes", 3, 1): {
        "train": "0ed658222220e6a1422fb1cb883fbdf3455b99a8f5d935a6096b16ef4e72379b",
        "test": "b7aa4e45e815708c1c469223b183405cb2bb734d612c80344a9cfdc28c890514"},
    # v4 (issue 22.2): field galaxies in every cutout.
    ("hsc-holismokes", 4, 1): {
        "train": "03c03c514565fddf2adb2d1911aa2f8622aad1ea747d1ff2434aa1043457a77a",
        "test": "441c7785524be1682fe83697b980f04257ea257dde46892df3fe80ceb50fe9e0"},
    # v5 (issue 22.2, cause 7): PSF-correlated noise up to the SLACS snapshots' own, per band.
    ("hsc-holismokes", 5, 1): {
        "train": "c90a83971f42d886ad0c4cb71f30597304a165583384bc5a8e6a6a2303264363",
        "test": "1dc4b46c74bc7031a427c5e0658f8f866f79442504bd5f439614134b3aa5141d"},
    # v6: the early types' isophote structure (bench/tasks.py: LENS_ISOPHOTES).
    ("hsc-holismokes", 6, 1): {
        "train": "c383a5c3fc9bf4176b5060d34f703ff85597e425d35a749769b86d1166cdbb62",
        "test": "d398c93dc87105ec287e3f1292ae20825653c9cf82faac866cc3c8c466886c34"},
    # v7: group companions around lenses as around group non-lenses (LENS_ENVIRONMENT).
    ("hsc-holismokes", 7, 1): {
        "train": "8ec45e2c5d25758a287e90992326e5da8ba489cd16558158aa2cc8b6a253af8b",
        "test": "a48f57f7d6e78319463eb9d21ce39486c84ddca8aea0ecbf6272c2d5da8dd51b"},
    # v8: Sersic cores integrated, as metcalf-ground v3 (real-hsc and real-vis since v10).
    ("hsc-holismokes", 8, 1): {
        "train": "3b895d6e9b5d4d3c99c45163aecce9d27760cdabc25001bb1d6922824019f40e",
        "test": "3b4c76e423ff8379fe7be59fe6661669ba818b882b2616593a350aa5c2c7dab1"},
    ("metcalf-ground", 2, 1): {
        "train": "fab571cfd6cc02ffb1d180f9ba377d2c1defabfaa8bf61a05fd43309d892f9e5",
        "test": "4a33fb1c316789ae1d5efdcefe6e384cf9a8489842b6fa674a5bace6fefa9c83"},
    # v3: Sersic cores integrated, as metcalf-space v3.
    ("metcalf-ground", 3, 1): {
        "train": "d8c8f504da7a41bf7bf209e1f676ed9db8dcf76c63c484a2d33d0c4370713a3e",
        "test": "bf4d74a8469d649062bd7bc7547445ab011ca8f8f3049195671cdc05e541b34c"},
    ("metcalf-space", 2, 1): {
        "train": "9e3ad2411a28fc956f3980580fe8e2f9fa05827fea4d0881ec673c7cb42620f4",
        "test": "2b62247b842ae0fb10b41d8cdea0d3ab8ed9d13909428e787edc42357d6ff259"},
    # v3: Sersic cores integrated (SimConfig.core_refinement), as modeling-hsc v2.
    ("metcalf-space", 3, 1): {
        "train": "84c5a89dfe0a03019aac6a62767c819a090623e1c6551353b6b2800986292727",
        "test": "57c5b6ca98347262b870130e5e53f91e6702992e33c23872aea148544dff4f04"},
    ("modeling-hsc", 1, 1): {
        "train": "874eb29d3dbf2030f3bea3d002009c885eacdaac364542fea6ddae196a12b7b2",
        "test": "0af12bdcbd25568631ac6f547f4b2b92fdbb1b025396163d4c4628306fb58079",
        "real": "d10af2ad694772cf2e317df4fedb4a2f097132bccb013ce117b5fca00f1e7abf"},
    ("photoz-boss", 1, None): {
        "train": "7f798bc7171e732dce7787cf4a10c7692319b67dbf0b7888e627ef4c27dba13b",
        "val": "cd7a87cf0c62ca85fd529166b4cf51245e8b8217f5802d1a15df7d1ba731a2e1",
        "test": "703a85445e49e9a925684a478a4d4e65da08dbaef1eb45a9268e6824a6a0341f"},
    ("photoz-mgs", 1, None): {
        "train": "b0eb8492b57fc99ff5c201989ff07259cf3d96d29424ea637006743a04ef42c4",
        "val": "e5c09bfac9c56c4aded1fd9c0241c63bfe8496a75a393360f899c75ae77ad6d8",
        "test": "34efd288464e5dce9843102353e6c0ff594df5bb0a15eab4e2dcd22ed7580dab"},
    ("real-hsc", 2, 1): {
        "train": "d8b1e92ca9a73f17647cffd2ec76b8b4dbf1cc243a95cc7475875eef90a4a4aa",
        "test": "41ade648676c4dc035bfce648a62802d04befe93d05d04259bf53f73eebcbd3a",
        "real": "d10af2ad694772cf2e317df4fedb4a2f097132bccb013ce117b5fca00f1e7abf"},
    # v3 (issue 22.4): the real split gains 20 bright COSMOS early types (same train/test).
    ("real-hsc", 3, 1): {
        "train": "d8b1e92ca9a73f17647cffd2ec76b8b4dbf1cc243a95cc7475875eef90a4a4aa",
        "test": "41ade648676c4dc035bfce648a62802d04befe93d05d04259bf53f73eebcbd3a",
        "real": "2aedc9c6a09dfb843e6f55b5c422cb455e5c8dbe61839bd8d3ed3e79708dc091"},
    ("real-hsc", 4, 1): {
        "train": "0ed658222220e6a1422fb1cb883fbdf3455b99a8f5d935a6096b16ef4e72379b",
        "test": "b7aa4e45e815708c1c469223b183405cb2bb734d612c80344a9cfdc28c890514",
        "real": "a40372be703f152480110f326e853ced1cadc2460f2ebcee3f3d1d81a9590bf3"},
    ("real-hsc", 5, 1): {
        "train": "03c03c514565fddf2adb2d1911aa2f8622aad1ea747d1ff2434aa1043457a77a",
        "test": "441c7785524be1682fe83697b980f04257ea257dde46892df3fe80ceb50fe9e0",
        "real": "a40372be703f152480110f326e853ced1cadc2460f2ebcee3f3d1d81a9590bf3"},
    # v6: hsc-holismokes v5's correlated noise; the real split as v5's.
    ("real-hsc", 6, 1): {
        "train": "c90a83971f42d886ad0c4cb71f30597304a165583384bc5a8e6a6a2303264363",
        "test": "1dc4b46c74bc7031a427c5e0658f8f866f79442504bd5f439614134b3aa5141d",
        "real": "a40372be703f152480110f326e853ced1cadc2460f2ebcee3f3d1d81a9590bf3"},
    # v7: hsc-holismokes v6's isophote structure; the real split as v6's.
    ("real-hsc", 7, 1): {
        "train": "c383a5c3fc9bf4176b5060d34f703ff85597e425d35a749769b86d1166cdbb62",
        "test": "d398c93dc87105ec287e3f1292ae20825653c9cf82faac866cc3c8c466886c34",
        "real": "a40372be703f152480110f326e853ced1cadc2460f2ebcee3f3d1d81a9590bf3"},
    # v8: the real split's HST PSF matched to HSC's; train and test as v7's.
    ("real-hsc", 8, 1): {
        "train": "c383a5c3fc9bf4176b5060d34f703ff85597e425d35a749769b86d1166cdbb62",
        "test": "d398c93dc87105ec287e3f1292ae20825653c9cf82faac866cc3c8c466886c34",
        "real": "c2f7e33c598de2bd59a2a8d28749ea670bb8e377a5f7581d35f5897132dcf73b"},
    # v9: hsc-holismokes v7's lens companions; the SLACS sky fitted beside the lens's halo.
    ("real-hsc", 9, 1): {
        "train": "8ec45e2c5d25758a287e90992326e5da8ba489cd16558158aa2cc8b6a253af8b",
        "test": "a48f57f7d6e78319463eb9d21ce39486c84ddca8aea0ecbf6272c2d5da8dd51b",
        "real": "e0adf304f48c12f88628ac43db5d3abedd65e47cd42c2ca8c46b1f576ac829f2"},
    # v10: hsc-holismokes v8's integrated cores; the real split as v9's.
    ("real-hsc", 10, 1): {
        "train": "3b895d6e9b5d4d3c99c45163aecce9d27760cdabc25001bb1d6922824019f40e",
        "test": "3b4c76e423ff8379fe7be59fe6661669ba818b882b2616593a350aa5c2c7dab1",
        "real": "e0adf304f48c12f88628ac43db5d3abedd65e47cd42c2ca8c46b1f576ac829f2"},
    # v11: the SLACS snapshots' photon noise, in the simulations' HST-like noise (per band)
    # and in the real split's top-up (own_photon_noise).
    ("real-hsc", 11, 1): {
        "train": "d11970b2fa8b9eb56d4ccfe1ce0c67cea07758cbc4597381b52a94978ff14c4c",
        "test": "f7b77cd573b12509f5dd502693018ce0d42d0c0537bc83062c76e6489d1a6f10",
        "real": "dc5581483647ab330aa2e5de4aceb6c69281a3a8c1a1c769c37e2f18bfe2272f"},
    # Issue 22.3: Euclid VIS, the SLACS lenses and non-lenses with F814W flux as VIS.
    ("real-vis", 1, 1): {
        "train": "4ab23dc3781db84a17bda2ba77f4cc57c1aab3ad5808300d52b5a7c6bbd26017",
        "test": "f2c4d8242965bfc35cf5c72ee6a48348ed08d4d2251f7059e31d55bfd85d141c",
        "real": "93a65df4c0d1e1be0623a6e5966ae592ce20b73e4b7fcb1eb844e018485106fd"},
    ("real-vis", 2, 1): {
        "train": "d3d60c19345faf7eefca74c7a8f8c6ece2edc88a11959c8f02b2ed52d4762fb5",
        "test": "56efd64e0981ce46e68fd6be97e0e484f48e84e45d268cb616d2f3259fe19701",
        "real": "675cbb1b9463806e05537bca37d570d9199094addc16cf4fd037928cbca90a38"},
    ("real-vis", 3, 1): {
        "train": "4fcfea9de13d5c36a2454785728195578dd2dcd06bf9b019cbc403f95256efe8",
        "test": "618aa44244b5fd0f3394756bbcd78308b37942eb56e9d59d225e587ae0e57616",
        "real": "675cbb1b9463806e05537bca37d570d9199094addc16cf4fd037928cbca90a38"},
    ("real-vis", 4, 1): {
        "train": "b0f6055b019d6850260000c2c3983691a60d68b5d9c811e8b6b78f0d75ee7645",
        "test": "aec75f918aa6cc1da0d84e05ca6cc803a9a5738b361fe890d2787f4904b30236",
        "real": "675cbb1b9463806e05537bca37d570d9199094addc16cf4fd037928cbca90a38"},
    # v5: the early types' isophote structure; the real split as v4's.
    ("real-vis", 5, 1): {
        "train": "142a9e7aa0b5bc5f9e29e93363e4f244a1cfbc58ed375ee2f6f8f3da3f3f408f",
        "test": "49da0c2c62de1f58ed5e24415942c2a63c379607e8986824141155f13dd3a74a",
        "real": "675cbb1b9463806e05537bca37d570d9199094addc16cf4fd037928cbca90a38"},
    # v6 (27a3afd to b260203, no run or report made from it): the VIS matching kernel fell back
    # to a delta (it compared rms radii, which HST's wings dominate), so its real split had the
    # HST PSF only. v7: matched to VIS's PSF; train and test as v5's.
    ("real-vis", 6, 1): {
        "train": "142a9e7aa0b5bc5f9e29e93363e4f244a1cfbc58ed375ee2f6f8f3da3f3f408f",
        "test": "49da0c2c62de1f58ed5e24415942c2a63c379607e8986824141155f13dd3a74a",
        "real": "65ad921d9f366fe876af70a42b542b2d7f7aa40bacf3f59bfe921a52c57e4e2c"},
    ("real-vis", 7, 1): {
        "train": "142a9e7aa0b5bc5f9e29e93363e4f244a1cfbc58ed375ee2f6f8f3da3f3f408f",
        "test": "49da0c2c62de1f58ed5e24415942c2a63c379607e8986824141155f13dd3a74a",
        "real": "019c640a8866c4180617f1e000ae049604143fcdc4836f545b0bd214a92bfc79"},
    # v8: as real-hsc v9 (lens companions; the SLACS sky beside the halo).
    ("real-vis", 8, 1): {
        "train": "76f4da34dc481106b148e754d8fcef12b2488c411f32b7e14a222ef3a27742b9",
        "test": "2e9559e3b98d926eb501343d97e4f70c41e69af14baff5b20de811e9a5467a13",
        "real": "d8d4817dbfbf07edeeb4e6638d2ecc343491d9820196a2e796f2638980d68bd3"},
    # v9: the correlated noise as the SLACS snapshots' after the v7 degradation (up to 2.3 sky
    # sigma, through the ACS-matching kernel); the real split's bytes are v8's.
    ("real-vis", 9, 1): {
        "train": "5fe70657d44cfd3f07e52be90a822e14a4aea9dc4ea43fca3f54b0be4be47e7e",
        "test": "0187130dbd919a0f65e91ae66e25aac0945d064ae3c8cd62c5b0c4108621b9b3",
        "real": "d8d4817dbfbf07edeeb4e6638d2ecc343491d9820196a2e796f2638980d68bd3"},
    # v10: integrated cores, as real-hsc v10; the real split as v9's.
    ("real-vis", 10, 1): {
        "train": "a82078250ad4f208b3fefbe2172ca5fa34015c9a77284e9aa88a84513a450f7f",
        "test": "13c3835bedb8299752ac7721029e553e4b57c201b968b63c0e0244383b18d120",
        "real": "d8d4817dbfbf07edeeb4e6638d2ecc343491d9820196a2e796f2638980d68bd3"},
    # v11: the HST-like noise carries the lens's photons (a 420 s snapshot's); the real split
    # as v10's.
    ("real-vis", 11, 1): {
        "train": "566ea54822afb0ed2ea2eb823d0e74d8a2c914b738b2ad478af9df86df8aaba6",
        "test": "0a6a776dc4c37aca11d35786eeedcf5d82baac8df2dfb7d3c3eed30a7ca8a9dc",
        "real": "d8d4817dbfbf07edeeb4e6638d2ecc343491d9820196a2e796f2638980d68bd3"},
    # v12: the real split's top-up counts the HST images' photons (own_photon_noise, as
    # real-hsc v11); train and test as v11's.
    ("real-vis", 12, 1): {
        "train": "566ea54822afb0ed2ea2eb823d0e74d8a2c914b738b2ad478af9df86df8aaba6",
        "test": "0a6a776dc4c37aca11d35786eeedcf5d82baac8df2dfb7d3c3eed30a7ca8a9dc",
        "real": "f5a45f115e7992bdff949b1808a58d556b607954c2ff5a851e25b540dbfe864d"},
    ("modeling-hsc", 2, 1): {
        "train": "b23596128779f976683aa987750c15c42b21b2523b287dbdaf45b1714d198731",
        "test": "0bcf58754c8f94a7ca44f3b9be69aad48b4bf230746bee00be1031908be335de",
        "real": "d10af2ad694772cf2e317df4fedb4a2f097132bccb013ce117b5fca00f1e7abf"},
    ("smoke-ground", 1, 1): {
        "train": "d5de1feb8af3077aa20b85c76d7bb578aed46ac6df9726fc7e67d471fc02392e",
        "test": "5d7b841343c4fd9cec52fef3d0ffc3c558556411ec7e73bfc20b4c7705c302df"},
}

# arithmetic -> (task, task version, simulator version) -> role -> content hash, where the
# bytes differ from GOLDEN_HASHES' (the real splits, numpy-only, do not). "avx512-fp16": made
# at 03f367f, the code whose GOLDEN_HASHES CI checked, on 2026-12-07.
GOLDEN_HASHES_ELSEWHERE = {
    "avx512-fp16": {
        ("design-hsc", 2, 1): {
            "train": "eddf009ad76b5b3e58f78beb6957d9ed6d139a64a2abf53e92e55235cffc11e4",
            "test": "d8159f215e6e08ab9827810149e062ed54dd2be721eb289a50f57483a7ba6f36"},
        ("hsc-holismokes", 8, 1): {
            "train": "a24a4e7963ac6ccb249c1149e40eaa7cabf542e87a416e3315eebdbc4b9ee5fd",
            "test": "863337f92e334fb4b0ad0e53e0f65ecb0c735511d823672a762ec24973af28c0"},
        ("metcalf-ground", 3, 1): {
            "train": "c0a8e1d447024d5224ee0852110e585be4452da95b6920271ad2fbdc4c6bc4d2",
            "test": "0688e93fb0fcf660306d083b56acb95f442ed31f162b7844ac4345ae8b7e87da"},
        ("metcalf-space", 3, 1): {
            "train": "84cee1d87818c49fbd374143ea8f31887320fc72856fc638b542a62a3cedcdd1",
            "test": "4b8d8ee0a14cd0461c9bdbf6073dc074801bb355545243e40cb2fa128ba0c6d0"},
        ("modeling-hsc", 2, 1): {
            "train": "1515893639d859772bf3270b8a540108ba73d851644874e3e0c0479fb17ad75e",
            "test": "79cc18bc3b30ecb15555ec16696e3a8916c219269927c5a2703f325e478217f8"},
        ("real-hsc", 11, 1): {
            "train": "a0273f192beeac9ff9db694a34b007676d372ad3bc076e63172750a624f283aa",
            "test": "a1970f25a3af8734bf188c17394c208f8e88ec02bd1243baf6ef398233082172"},
        ("real-vis", 12, 1): {
            "train": "60d2f3da17295fe8962edebb9f1a69f70c3ecb4e37063f70f23fb7bdc30529e3",
            "test": "8c993767c71caf82a4026f3f5a4c613521f927046b4dc03a3445fec333208c4d"},
        ("smoke-ground", 1, 1): {
            "train": "c79a0c2d3f97d006187920d4ebb5f5075af4ba04e6bd05ea2e12878e291ed279",
            "test": "bce5d30f1369f14b3d46bcd2f06d8ddef22b0770584800a64cf3be09b7f363ca"},
        # v13 (cause 14): the simulated HST-like noise with the drizzled noise's correlation
        # (up to 3.0 sky sigma, photons 1.75x); the real split is v12's. Made on this arithmetic
        # only: the reference machines' train and test hashes are to be added there.
        ("real-vis", 13, 1): {
            "train": "b02cff004415a2f8b7c2315ce91e13a9da12a1cdcec3be219a37d4f6d42d213c",
            "test": "16910fa8f23c0f1e69457ab6d465624984bdaa4d2f43d878a412f954f9aa42be",
            "real": "f5a45f115e7992bdff949b1808a58d556b607954c2ff5a851e25b540dbfe864d"},
        # real-hsc v12 (cause 14 for HSC): the simulated HST-like noise as the drizzled noise
        # degrades (g 0.10, r 0.29, i 0.67, z 0.29 sky sigma, photons 2.10x), and the real split
        # carries the HST noise with its measured correlation (measured_noise_correlation).
        # The real splits are numpy-only, but the reference machines lack the key's train and
        # test hashes: to be added there.
        ("real-hsc", 12, 1): {
            "train": "adb415c740ef1f94bd303db7f1ce6e884da664f1beb10c76e41ff970a016074d",
            "test": "12361563d750b297cde4b2e610ba1be35e07fa2a968e532bc73a32afe0af0f43",
            "real": "e7b3dd69709948a3216e4e6fcf6b73b42b4d4b6bca23fae75de97310c0491bbb"},
        # real-vis v14: the real split with the measured correlation, as real-hsc v12; train
        # and test as v13's.
        ("real-vis", 14, 1): {
            "train": "b02cff004415a2f8b7c2315ce91e13a9da12a1cdcec3be219a37d4f6d42d213c",
            "test": "16910fa8f23c0f1e69457ab6d465624984bdaa4d2f43d878a412f954f9aa42be",
            "real": "0849ee4f43e8defb6f0b754293bcc81a7288a6a861fbc6947be61c2322c5bdf3"},
        # modeling-hsc v3: real-hsc v12's lenses (its config with every cutout a lens) and its
        # real split's SLACS lenses alone. The reference machines' hashes are to be added there.
        ("modeling-hsc", 3, 1): {
            "train": "f9206b64f938fa2532bf9e86eb73213def089c40ab166806a063fba00b5b9f9e",
            "test": "9ac7a72a7713cf91df548cd4aea9e5f132ad74567bcf6bc5ab79020b126e8013",
            "real": "14c0908dc6be1d8ff092b9076cac25e5d7be9e16c05a5746e3d4c07ac41ee7b1"},
    },
}

TASKS = sorted(all_tasks().values(), key=lambda task: task.name)


def golden_key(task) -> tuple[str, int, int | None]:
    return task.name, task.version, SIMULATOR_VERSION if simulated(task) else None


def needs_cosmos(config) -> bool:
    """Whether the simulator draws real COSMOS galaxies for this config (sources or
    negatives)."""
    return config.source_model != "sersic" or bool((config.negatives or {}).get("cosmos"))


def split_hashes(task, workdir, real_data, real_lens_splits) -> dict[str, str]:
    """The content hashes of a small split of ``task``, made the way `bench run` makes it (the
    split of real lenses, which has one size, by ensure_real_lens_split once per session:
    conftest.real_lens_splits, which the suites' tests share)."""
    if not simulated(task):
        from lensbench.bench.suites.photoz import load_task_data

        real_data("photoz")
        return load_task_data(task, "smoke", workdir).hashes
    if needs_cosmos(task.config):
        real_data("cosmos")
    small = dataclasses.replace(task, sizes={GOLDEN_PROFILE: (GOLDEN_N, GOLDEN_N)})
    hashes = {role: ensure_split(small, role, GOLDEN_PROFILE, workdir, quiet=True).content_hash
              for role in ("train", "test")}
    if task.real_lenses:
        real_data("cosmos", "slacs")
        hashes["real"] = real_lens_splits(task).content_hash
    return hashes



def test_the_probe_names_this_machines_arithmetic_and_the_stage_that_differs(machine_arithmetic,
                                                                            capsys):
    """The probe that says why a machine's splits differ from the reports': simulated again it
    gives this machine's known hashes, and its verdict names the first stage that differs and
    the arithmetic, where known."""
    assert cli.main(["data", "probe"]) == 0  # bench data probe
    verdict = capsys.readouterr().out
    here = splits.probe_hashes()
    assert here == splits.MACHINE_ARITHMETICS[machine_arithmetic]
    assert verdict.strip() == splits.probe_lines(here)[0]
    if machine_arithmetic == "reference":
        assert "the same as where the reports were made" in verdict
    else:
        assert f"It is the arithmetic `{machine_arithmetic}`" in verdict
    reports = splits.PROBE_HASHES
    other = {**reports, "noiseless images": "0" * 16, "images with noise": "1" * 16}
    verdict = splits.probe_lines(other)[0]
    assert "noiseless images differs" in verdict and "float32 arithmetic" in verdict
    assert "images with noise follow" in verdict and "It is the arithmetic" not in verdict
    verdict = splits.probe_lines(splits.MACHINE_ARITHMETICS["avx512-fp16"])[0]
    assert "truth table differs" in verdict and "MKL's vector math" in verdict
    assert "It is the arithmetic `avx512-fp16`: an Intel Xeon with AVX512_FP16" in verdict


def golden_hashes(key, arithmetic: str, simulated_task: bool) -> dict[str, str] | None:
    """role -> content hash of ``key`` on a machine of ``arithmetic`` (the reports' table for the
    tasks the simulator does not make, and for the roles it does not make); None where that
    arithmetic's table lacks the key."""
    if arithmetic == "reference" or not simulated_task:
        return GOLDEN_HASHES.get(key)
    elsewhere = GOLDEN_HASHES_ELSEWHERE.get(arithmetic, {})
    return {**GOLDEN_HASHES.get(key, {}), **elsewhere[key]} if key in elsewhere else None


@pytest.mark.parametrize("task", TASKS, ids=[task.name for task in TASKS])
def test_a_task_version_pins_its_bytes(task, tmp_path, real_data, real_lens_splits,
                                       machine_arithmetic):
    key = golden_key(task)
    golden = golden_hashes(key, machine_arithmetic, simulated(task))
    table = ("GOLDEN_HASHES" if machine_arithmetic == "reference"
             else f"GOLDEN_HASHES_ELSEWHERE[{machine_arithmetic!r}]")
    if golden is None and any(key in tables for tables in (GOLDEN_HASHES,
                                                           *GOLDEN_HASHES_ELSEWHERE.values())):
        pytest.skip(f"{key} has golden hashes from other machines only: add this machine's "
                    f"(arithmetic {machine_arithmetic!r}) to {table} if the code is the one "
                    "that made theirs")
    hashes = split_hashes(task, tmp_path, real_data, real_lens_splits)
    assert golden is not None, (
        f"no golden hashes for {key} (task, version, simulator version): a new task or a bumped "
        f"version; add {key!r}: {hashes!r} to {table} in {__file__}")
    changed = {role: (golden.get(role), new) for role, new in hashes.items()
               if golden.get(role) != new}
    assert not changed, (
        f"{task.name} v{task.version} (simulator v{SIMULATOR_VERSION}) no longer makes the bytes "
        f"it made on a machine of arithmetic {machine_arithmetic!r}: {changed} (role: (golden, "
        f"now)). Bump the task's version (and SIMULATOR_VERSION when the simulator's output "
        f"changed), regenerate the reports that `bench report --check` lists, then add the new "
        f"key to {table}")




@pytest.mark.parametrize("name", ["metcalf-ground", "hsc-holismokes"])
def test_split_bytes_do_not_depend_on_the_thread_count(name, tmp_path, real_data):
    """The simulator spreads its chunks over the torch threads; the bytes must not follow the
    thread count (metcalf v1's did; HSC's real sources and hard negatives did at 3, 6, 7 and 12
    threads until they too were rendered on one-thread workers, issue 24)."""
    import torch

    task = all_tasks()[name]
    if needs_cosmos(task.config):
        real_data("cosmos")
    small = dataclasses.replace(task, sizes={GOLDEN_PROFILE: (GOLDEN_N, GOLDEN_N)})
    previous = torch.get_num_threads()
    hashes = {}
    try:
        for threads in (1, 3, 6):
            torch.set_num_threads(threads)
            hashes[threads] = ensure_split(small, "test", GOLDEN_PROFILE, tmp_path / str(threads),
                                           quiet=True).content_hash
    finally:
        torch.set_num_threads(previous)
    assert hashes[3] == hashes[1] and hashes[6] == hashes[1]

def check(reports) -> tuple[int, dict[str, str]]:
    """`bench report --check --out reports`: its exit code and its line for each report."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(["report", "--check", "--out", str(reports)])
    lines = dict(line.split(": ", 1) for line in out.getvalue().splitlines())
    return code, {str(path).rsplit("/", 1)[-1]: line for path, line in lines.items()}


def test_report_check_lists_the_reports_made_from_splits_the_code_no_longer_makes(
        tmp_path, monkeypatch):
    workdir, reports = tmp_path / "work", tmp_path / "reports"
    run_suite(get_suite("smoke"), profile="smoke", seed=0, workdir=workdir, methods=["random"],
              log=lambda _: None)
    report = next(path for path in write_report("smoke", workdir=workdir, out_dir=reports,
                                                profile="smoke") if path.suffix == ".md")
    text = report.read_text()
    task = get_suite("smoke").tasks[0]
    assert f"{task.name} v{task.version}; simulator v{SIMULATOR_VERSION}" in text
    # The same report as written before the header stated versions: checked by its split
    # hashes, the smoke splits being cheap to remake; one copy with a hash the code never made.
    old_header = "\n".join(line for line in text.splitlines()
                           if not line.startswith("- task versions: "))
    (reports / "old-header.md").write_text(old_header)
    train_hash = next(line for line in text.splitlines()
                      if line.startswith("Splits")).split("`")[1]
    (reports / "old-header-other-bytes.md").write_text(old_header.replace(train_hash,
                                                                          "0123456789ab"))
    code, lines = check(reports)
    assert lines == {report.name: "current", "old-header.md": "current",
                     "old-header-other-bytes.md": f"stale: {task.name} train split "
                                                  f"`0123456789ab`, now `{train_hash}`"}
    assert code == 1

    (reports / "old-header-other-bytes.md").unlink()
    assert check(reports) == (0, {report.name: "current", "old-header.md": "current"})

    # A bumped task version makes both stale; so does a bumped simulator version.
    bumped = dataclasses.replace(task, version=task.version + 1)
    monkeypatch.setitem(tasks.SUITES, "smoke",
                        dataclasses.replace(get_suite("smoke"), tasks=(bumped,)))
    code, lines = check(reports)
    assert code == 1
    assert lines == {name: f"stale: {task.name} v{task.version}, now v{bumped.version}"
                     for name in (report.name, "old-header.md")}
    monkeypatch.undo()
    monkeypatch.setattr(simulate, "SIMULATOR_VERSION", SIMULATOR_VERSION + 1)
    code, lines = check(reports)
    assert code == 1
    assert lines[report.name] == (f"stale: simulator v{SIMULATOR_VERSION}, "
                                  f"now v{SIMULATOR_VERSION + 1}")


def test_a_report_of_a_workdir_reused_across_a_version_bump_shows_only_the_current_runs(
        tmp_path, monkeypatch):
    """A version bump makes new splits; the runs on the old ones stay in results.jsonl, and the
    report's section (one test set, one "Splits" line) must not mix them with the new."""
    workdir, reports = tmp_path / "work", tmp_path / "reports"
    suite = get_suite("smoke")
    run_suite(suite, profile="smoke", seed=0, workdir=workdir, methods=["random", "pca"],
              log=lambda _: None)
    task = suite.tasks[0]
    bumped = dataclasses.replace(task, version=task.version + 1,
                                 config=task.config.replace(source_mag_range=(21.5, 23.0)))
    monkeypatch.setitem(tasks.SUITES, "smoke", dataclasses.replace(suite, tasks=(bumped,)))
    run_suite(get_suite("smoke"), profile="smoke", seed=0, workdir=workdir, methods=["random"],
              log=lambda _: None)
    new_test = ensure_split(bumped, "test", "smoke", workdir, quiet=True).content_hash
    report = next(path for path in write_report("smoke", workdir=workdir, out_dir=reports,
                                                profile="smoke") if path.suffix == ".md")
    text = report.read_text()
    assert f"test `{new_test[:12]}`" in text
    assert "`random`" in text and "`pca`" not in text  # pca ran on the old splits only


def test_a_header_states_and_check_reads_only_the_tasks_the_report_covers(tmp_path,
                                                                          monkeypatch):
    """The metcalf compare profile runs metcalf-ground only: its report's versions line names
    that task alone, and a header that also names a task without a section (as written before)
    is not made stale by that task's version."""
    workdir, reports = tmp_path / "work", tmp_path / "reports"
    ground, other = get_suite("smoke").tasks[0], dataclasses.replace(
        get_suite("metcalf").tasks[1], version=1)
    two_tasks = dataclasses.replace(get_suite("smoke"), tasks=(ground, other))
    monkeypatch.setitem(tasks.SUITES, "smoke", two_tasks)
    run_suite(dataclasses.replace(two_tasks, tasks=(ground,)), profile="smoke", seed=0,
              workdir=workdir, methods=["random"], log=lambda _: None)
    report = next(path for path in write_report("smoke", workdir=workdir, out_dir=reports,
                                                profile="smoke") if path.suffix == ".md")
    text = report.read_text()
    assert f"- task versions: {ground.name} v{ground.version}; simulator" in text
    assert f"## {other.name}" not in text
    assert check(reports) == (0, {report.name: "current"})
    # the header of before: every task of the suite, the unreported one at an old version
    old_header = text.replace(f"- task versions: {ground.name} v{ground.version};",
                              f"- task versions: {ground.name} v{ground.version}, "
                              f"{other.name} v{other.version - 1};")
    report.write_text(old_header)
    assert check(reports) == (0, {report.name: "current"})
    # its own task's version still counts
    report.write_text(old_header.replace(f"{ground.name} v{ground.version},",
                                         f"{ground.name} v{ground.version - 1},", 1))
    assert check(reports) == (1, {report.name: f"stale: {ground.name} v{ground.version - 1}, "
                                                f"now v{ground.version}"})


def test_report_check_counts_a_report_it_cannot_verify_as_stale(tmp_path):
    """A header without versions whose splits are too large to remake for a check."""
    reports = tmp_path / "reports"
    reports.mkdir()
    task = get_suite("hsc").tasks[0]
    (reports / "hsc.md").write_text(
        f"# lensbench leaderboard: `hsc` suite (default profile)\n\n"
        f"## {task.name} (v{task.version})\n\nSplits: train `0123456789ab`, test "
        f"`0123456789ab` (content hashes).\n")
    code, lines = check(reports)
    assert code == 1
    assert lines["hsc.md"].startswith(f"stale: cannot verify {task.name}: the header states no "
                                      f"versions and its default splits")


def test_report_needs_a_suite_or_check_and_check_needs_reports(tmp_path, capsys):
    assert cli.main(["report", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("bench: error: bench report needs --suite SUITE (or "
                                       "--check)\n")
    assert cli.main(["report", "--check", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"bench: error: {tmp_path}: no reports (*.md) to check\n"
