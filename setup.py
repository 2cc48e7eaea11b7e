"""Only what pyproject.toml cannot say: ship the top-level `model_card.md` template inside the package, where
`layoutlm_roialign.hub.find_model_card_template` looks for it in an installed wheel (a source checkout uses the
top-level file itself)."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithModelCard(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "layoutlm_roialign" / "model_card.md"
        self.mkpath(str(target.parent))
        self.copy_file("model_card.md", str(target))


setup(cmdclass={"build_py": BuildPyWithModelCard})
