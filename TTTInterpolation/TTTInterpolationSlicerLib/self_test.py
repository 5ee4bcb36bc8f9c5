"""The module's self-test ("Reload and Test", ``Slicer --testing``) on the synthetic phantom.

Needs Slicer; how to run it: docs/slicer-module.md.
"""

from __future__ import annotations

import unittest

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest

from . import dependencies, sequences, worker
from .module_logic import TTTInterpolationLogic, loadProblem


class TTTInterpolationTest(ScriptedLoadableModuleTest):
    """Self-test on the synthetic phantom; how to run it: docs/slicer-module.md.

    It never installs anything: without torch or the engine's packages it is skipped, with
    the reason (under ``--testing`` a confirmation box would say yes by itself).
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()
        reason = loadProblem() or dependencies.self_test_skip_reason()
        if reason:
            raise unittest.SkipTest(reason)

    def runTest(self) -> None:
        try:
            self.setUp()
        except unittest.SkipTest as skip:  # "Reload and Test": say why, do not fail
            self.delayDisplay(f"TTT Interpolation self-test skipped: {skip}")
            return
        self.test_phantomInterpolation()
        self.setUp()
        self.test_phantomEvaluation()
        self.setUp()
        self.test_engineFailureLeavesSceneUnchanged()

    def test_phantomInterpolation(self) -> None:
        """Frames between ED and ES of the phantom: count, index values, geometry."""
        from TTTInterpolationLib.data.phantoms.sequences import end_frames

        self.delayDisplay("Creating the phantom")
        phantom = TTTInterpolationLogic().loadPhantom(frames=10, size=(64, 64, 32))
        itemA, itemB = end_frames("cardiac", 10)
        count = itemB - itemA - 1

        self.delayDisplay("Interpolating on the CPU")
        output = TTTInterpolationLogic().interpolate(phantom, itemA, itemB, count, device="cpu")

        self.assertEqual(output.GetNumberOfDataNodes(), count)
        expected = [float(phantom.GetNthIndexValue(i)) for i in range(itemA + 1, itemB)]
        self.assertEqual(sequences.index_values(output), expected)
        reference = phantom.GetNthDataNode(itemA)
        for item in range(count):
            self.assertTrue(sequences.same_grid(output.GetNthDataNode(item), reference))

    def test_phantomEvaluation(self) -> None:
        """Evaluate mode on the phantom: cycle TTT beats linear blending against the truth."""
        from TTTInterpolationLib.data.phantoms.sequences import end_frames

        phantom = TTTInterpolationLogic().loadPhantom(frames=10, size=(64, 64, 32))
        itemA, itemB = end_frames("cardiac", 10)
        self.delayDisplay("Evaluating on the CPU with cycle test-time training")
        result = TTTInterpolationLogic().evaluate(phantom, itemA, itemB, ttt="cycle", steps=30,
                                                  device="cpu")
        labels = [s.label for s in result.settings]
        self.assertEqual(labels[:3], ["linear blending", "registration", "UVI-Net"])
        self.assertEqual(sequences.index_values(result.truthSequence),
                         [float(phantom.GetNthIndexValue(i)) for i in range(itemA + 1, itemB)])
        linear, cycle = result.settings[0].scores["PSNR"], result.settings[-1].scores["PSNR"]
        self.delayDisplay(f"PSNR {cycle:.2f} dB with cycle TTT, linear blending {linear:.2f} dB")
        self.assertGreater(cycle, linear)

    def test_engineFailureLeavesSceneUnchanged(self) -> None:
        phantom = TTTInterpolationLogic().loadPhantom(frames=4, size=(32, 32, 16))
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(worker.EngineError):
            TTTInterpolationLogic().interpolate(phantom, 0, 1, 1, weights=__file__)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
