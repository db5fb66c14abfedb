import subprocess
import sys


def test_import_leaves_torch_lightning_and_scvi_for_later():
    # torch, Lightning and scvi-tools take seconds to import: `import sclatent` (and the analyses that
    # need no model, such as sl.tl.leiden) must not pay for them; a model imports them when first used
    code = (
        "import sys, sclatent as sl\n"
        "heavy = ('torch', 'lightning', 'scvi')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "sl.tl.leiden, sl.pl.history\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "sl.Autoencoder\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]"
    assert out[1] == "[]"
    assert out[2] == "['lightning', 'scvi', 'torch']"
