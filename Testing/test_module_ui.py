"""Static check of the module's .ui against the module code, both ways.

Qt cannot run here, so the .ui XML and the module file's syntax tree are compared: every
``self.ui.X`` the code uses exists with the class its name promises; every widget bound to
the parameter node (``SlicerParameterName``) names a parameter and has the exact widget
class the parameter node's GUI connector for that type accepts; every parameter has a widget;
and every named widget is used or bound. The test names contain "slicer" for ``-k``.
"""

from __future__ import annotations

import ast
import enum
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from TTTInterpolationSlicerLib import logic, worker

MODULE_DIR = Path(__file__).resolve().parents[1] / "TTTInterpolation"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "TTTInterpolation.ui"
MODULE_FILE = MODULE_DIR / "TTTInterpolation.py"
# The module file and the Slicer-only parts it imports (parameter node, logic class,
# self-test): what Slicer runs as "the module", checked here as one syntax tree.
MODULE_SOURCES = [MODULE_FILE, *(MODULE_DIR / "TTTInterpolationSlicerLib" / name for name in
                                 ("parameters.py", "module_logic.py", "self_test.py"))]
PARAMETER_CLASS = "TTTInterpolationParameterNode"

# Widget class by name suffix (longest first), the module's naming convention.
CLASS_BY_SUFFIX = [
    ("CollapsibleButton", {"ctkCollapsibleButton"}),
    ("ProgressBar", {"QProgressBar"}),
    ("TableWidget", {"QTableWidget"}),
    ("TextEdit", {"QPlainTextEdit"}),
    ("Selector", {"qMRMLNodeComboBox"}),
    ("ComboBox", {"QComboBox"}),
    ("CheckBox", {"QCheckBox"}),
    ("SpinBox", {"QSpinBox", "QDoubleSpinBox"}),
    ("LineEdit", {"ctkPathLineEdit", "QLineEdit"}),
    ("Button", {"QPushButton"}),
    ("Label", {"QLabel"}),
    ("Widget", {"QWidget"}),
]
# Exact widget class the parameterNodeWrapper connector needs per parameter type (its
# connectors compare type(widget) exactly, so a subclass would not do).
ENUMS = {cls.__name__ for module in (logic, worker) for cls in vars(module).values()
         if isinstance(cls, type) and issubclass(cls, enum.Enum) and hasattr(cls, "label")}
# ``str`` is bound to a path field by the module's own connector (parameters.py), so that an
# unset file is "" rather than pathlib.Path() == ".".
CONNECTOR_CLASS = {"bool": "QCheckBox", "int": "QSpinBox", "float": "QDoubleSpinBox",
                   "pathlib.Path": "ctkPathLineEdit", "str": "ctkPathLineEdit",
                   "vtkMRMLSequenceNode": "qMRMLNodeComboBox",
                   **dict.fromkeys(ENUMS, "QComboBox")}
# Sections only group rows; Designer's default label names mark plain row captions.
LAYOUT_ONLY_CLASSES = {"ctkCollapsibleButton"}
DEFAULT_LABEL_NAME = re.compile(r"label(_\d+)?$")


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI_FILE).getroot().iter("widget")}


def bound_widgets() -> dict[str, str]:
    """Parameter name -> widget name, from the SlicerParameterName dynamic properties."""
    bound: dict[str, str] = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameter = prop.findtext("string")
                assert parameter not in bound, f"{parameter} bound twice"
                bound[parameter] = name
    return bound


def module_tree() -> ast.Module:
    trees = [ast.parse(path.read_text()) for path in MODULE_SOURCES]
    return ast.Module(body=[node for tree in trees for node in tree.body], type_ignores=[])


def used_ui_names() -> set[str]:
    return {node.attr for node in ast.walk(module_tree())
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui" and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"}


def parameter_types() -> dict[str, str]:
    """Field -> base type of the parameter node class (``Annotated[int, ...]`` -> ``int``)."""
    classes = [n for n in module_tree().body if isinstance(n, ast.ClassDef)
               and n.name == PARAMETER_CLASS]
    assert classes, f"{PARAMETER_CLASS} not found in the module's sources"
    fields = {}
    for statement in classes[0].body:
        if isinstance(statement, ast.AnnAssign):
            annotation = statement.annotation
            if (isinstance(annotation, ast.Subscript)
                    and ast.unparse(annotation.value) == "Annotated"):
                annotation = annotation.slice.elts[0]
            fields[statement.target.id] = ast.unparse(annotation)
    return fields


def expected_classes(name: str) -> set[str]:
    for suffix, classes in CLASS_BY_SUFFIX:
        if name.lower().endswith(suffix.lower()):
            return classes
    raise AssertionError(f"widget name {name!r} does not end with a known suffix")


def test_slicer_ui_top_widget_is_a_mrml_widget() -> None:
    root = ET.parse(UI_FILE).getroot()
    top = root.find("widget")
    assert (root.findtext("class"), top.get("class"), top.get("name")) == (
        "TTTInterpolation", "qMRMLWidget", "TTTInterpolation")
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    custom = {w.get("class") for w in root.iter("widget")} - {
        "QWidget", "QLabel", "QPushButton", "QComboBox", "QSpinBox", "QDoubleSpinBox",
        "QCheckBox", "QProgressBar", "QLineEdit", "QTableWidget", "QPlainTextEdit"}
    assert custom <= declared, f"undeclared custom widgets: {custom - declared}"


@pytest.mark.parametrize("name", sorted(used_ui_names()))
def test_slicer_ui_widget_used_by_code_exists_with_expected_class(name: str) -> None:
    widgets = ui_widgets()
    assert name in widgets, f"self.ui.{name} is not in {UI_FILE.name}"
    assert widgets[name].get("class") in expected_classes(name)


@pytest.mark.parametrize(("parameter", "base_type"), sorted(parameter_types().items()))
def test_slicer_ui_parameter_bound_to_the_right_widget_class(parameter: str,
                                                             base_type: str) -> None:
    bound = bound_widgets()
    assert parameter in bound, f"parameter {parameter} has no widget in {UI_FILE.name}"
    widget = ui_widgets()[bound[parameter]]
    assert base_type in CONNECTOR_CLASS, f"no GUI connector known for {base_type}"
    assert widget.get("class") == CONNECTOR_CLASS[base_type]
    assert widget.get("class") in expected_classes(bound[parameter])
    if base_type == "vtkMRMLSequenceNode":
        node_types = [s.text for p in widget.findall("property")
                      if p.get("name") == "nodeTypes" for s in p.iter("string")]
        assert node_types == ["vtkMRMLSequenceNode"]


def test_slicer_ui_every_binding_names_a_parameter() -> None:
    unknown = set(bound_widgets()) - set(parameter_types())
    assert not unknown, f"SlicerParameterName without a parameter: {unknown}"


def test_slicer_ui_every_named_widget_is_used_or_bound() -> None:
    used, bound = used_ui_names(), set(bound_widgets().values())
    idle = [name for name, widget in ui_widgets().items()
            if name not in used | bound and name != "TTTInterpolation"
            and widget.get("class") not in LAYOUT_ONLY_CLASSES
            and not DEFAULT_LABEL_NAME.match(name)]
    assert not idle, f"widgets neither used by the code nor bound: {idle}"


def test_slicer_ui_mrml_widgets_receive_the_scene() -> None:
    root = ET.parse(UI_FILE).getroot()
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("sender") == "TTTInterpolation"
                 and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml = {name for name, w in ui_widgets().items() if w.get("class").startswith("qMRML")
            and name != "TTTInterpolation"}
    assert mrml and mrml <= connected, f"no scene for {mrml - connected}"


def method(class_name: str, name: str) -> ast.FunctionDef:
    classes = [n for n in module_tree().body
               if isinstance(n, ast.ClassDef) and n.name == class_name]
    assert classes, f"{class_name} not found"
    methods = [n for n in classes[0].body if isinstance(n, ast.FunctionDef) and n.name == name]
    assert methods, f"{class_name}.{name} not found"
    return methods[0]


def calls_in_order(function: ast.FunctionDef) -> list[str]:
    """Dotted names of the calls in ``function``, in source order."""
    calls = [node for node in ast.walk(function) if isinstance(node, ast.Call)]
    return [ast.unparse(c.func) for c in sorted(calls, key=lambda c: (c.lineno, c.col_offset))]


def test_slicer_module_checks_the_version_before_anything_else() -> None:
    """On an old Slicer the module says why at load, before the engine or sample data."""
    calls = calls_in_order(method("TTTInterpolation", "__init__"))
    first = calls.index("loadProblem")
    assert first < calls.index("worker.add_engine_to_path")
    assert first < calls.index("slicer.app.connect")
    check = next(n for n in module_tree().body if isinstance(n, ast.FunctionDef)
                 and n.name == "loadProblem")
    source = ast.unparse(check)
    assert "slicer.app.majorVersion" in source and "slicer.app.minorVersion" in source
    assert "dependencies.version_problem" in source
    setup = calls_in_order(method("TTTInterpolationWidget", "setup"))
    assert setup.index("loadProblem") < setup.index("slicer.util.loadUI")


def test_slicer_widget_finds_devices_in_a_child_process_and_again_after_install() -> None:
    assert "self.startDeviceProbe" in calls_in_order(method("TTTInterpolationWidget", "setup"))
    assert "self._deviceWatch.start" in calls_in_order(
        method("TTTInterpolationWidget", "startDeviceProbe"))
    assert "dependencies.DeviceProbe" in calls_in_order(method("DeviceWatch", "start"))
    apply = calls_in_order(method("TTTInterpolationWidget", "onApplyButton"))
    assert apply.index("dependencies.ensure_all") < apply.index("self.startDeviceProbe")


def test_slicer_widget_shows_time_and_engine_log() -> None:
    state = ast.unparse(method("TTTInterpolationWidget", "showRunState"))
    assert "logic.describe_timing(run.elapsed, run.remaining)" in state
    assert "self.ui.engineLogTextEdit.setPlainText(log)" in state
    assert "self.showRunState" in calls_in_order(method("TTTInterpolationWidget", "onProgress"))


def test_slicer_console_runs_check_the_dependencies_before_an_engine_process() -> None:
    """``logic.interpolate`` / ``logic.evaluate`` from the console go through ``_context``
    (as Apply does), which asks for missing packages before any run is created."""
    context = calls_in_order(method("TTTInterpolationLogic", "_context"))
    assert context.index("dependencies.ensure_all") < context.index("worker.find_python")
    for name in ("createRun", "createEvaluation"):
        assert "self._context" in calls_in_order(method("TTTInterpolationLogic", name))



def test_slicer_parameter_defaults_come_from_the_engine_and_no_unused_annotations() -> None:
    """Defaults read from the engine's contract (no literal copies), and no Decimals /
    SingleStep annotations, which a QDoubleSpinBox ignores with a warning at every load
    (its decimals and step are set in the .ui)."""
    source = "\n".join(path.read_text() for path in MODULE_SOURCES)
    node = next(n for n in module_tree().body if isinstance(n, ast.ClassDef)
                and n.name == "TTTInterpolationParameterNode")
    defaults = {ast.unparse(f.target): ast.unparse(f.value) for f in node.body
                if isinstance(f, ast.AnnAssign) and f.value is not None}
    for name in ("ttt", "scheme", "steps", "method", "device", "seed"):
        assert defaults[name] == f"ENGINE_DEFAULTS.{name}", name
    assert "Decimals" not in source and "SingleStep" not in source
    spin = ui_widgets()["learningRateSpinBox"]
    props = {p.get("name"): p for p in spin.findall("property")}
    assert props["decimals"].find("number").text == "6"
    assert float(props["singleStep"].find("double").text) == 1e-5


def test_slicer_panel_counts_frames_from_one_as_the_browser_does() -> None:
    """The panel's Frame A / B are the browser's frame numbers (from 1); Apply hands the
    logic what ``panel.run_request`` makes of them (item indices from 0, tested headless in
    test_slicer_logic.py), and the browser's item becomes a frame number."""
    node = next(n for n in module_tree().body if isinstance(n, ast.ClassDef)
                and n.name == "TTTInterpolationParameterNode")
    fields = {ast.unparse(f.target): f for f in node.body if isinstance(f, ast.AnnAssign)}
    assert [ast.unparse(fields[k].value) for k in ("frameA", "frameB")] == ["1", "2"]
    assert "WithinRange(1," in ast.unparse(fields["frameA"].annotation)
    assert "panel.run_request" in calls_in_order(method("TTTInterpolationWidget",
                                                        "onApplyButton"))
    update = ast.unparse(method("TTTInterpolationWidget", "updateGUI"))
    assert "panel.frame_item(p.frameA)" in update and "panel.frame_item(p.frameB)" in update
    take = ast.unparse(method("TTTInterpolationWidget", "takeBrowserFrame"))
    assert "item + 1" in take
    for name in ("frameASpinBox", "frameBSpinBox"):
        tip = ui_widgets()[name].find("property[@name='toolTip']/string").text
        assert "from 1" in tip


def test_slicer_engine_log_keeps_the_readers_place() -> None:
    """The log refresh jumps to the end only when the view was at the end already."""
    show = ast.unparse(method("TTTInterpolationWidget", "showRunState"))
    assert "atEnd" in show and "scrollBar.maximum if atEnd else position" in show
    assert show.index("scrollBar.value") < show.index("setPlainText")


def test_slicer_leaving_the_module_restores_the_layout_of_before_an_evaluation() -> None:
    assert "self.logic.restoreLayout" in calls_in_order(method("TTTInterpolationWidget", "exit"))
    assert "self.lastResult.restoreLayout" in calls_in_order(
        method("TTTInterpolationLogic", "restoreLayout"))



def test_slicer_unset_weights_file_is_empty_not_a_dot() -> None:
    """An unset weights file is "" (an empty field; the logic passes no --weights), not
    ``pathlib.Path()``, which is "." and showed as "." in the panel. Slicer's connector binds a
    path field to Path only: the module registers its own for ``str``."""
    node = next(n for n in module_tree().body if isinstance(n, ast.ClassDef)
                and n.name == PARAMETER_CLASS)
    field = next(f for f in node.body if isinstance(f, ast.AnnAssign)
                 and ast.unparse(f.target) == "weightsFile")
    assert ast.unparse(field.annotation) == "str" and ast.literal_eval(field.value) == ""
    assert ui_widgets()[bound_widgets()["weightsFile"]].get("class") == "ctkPathLineEdit"
    connectors = [n for n in module_tree().body if isinstance(n, ast.ClassDef)
                  and "parameterNodeGuiConnector" in map(ast.unparse, n.decorator_list)]
    represents = [ast.unparse(method(c.name, "canRepresent")) for c in connectors]
    assert any("ctk.ctkPathLineEdit" in r and "str" in r for r in represents)
    read = next(ast.unparse(method(c.name, "read")) for c in connectors
                if "ctk.ctkPathLineEdit" in ast.unparse(method(c.name, "canRepresent")))
    assert read.endswith("return self._widget.currentPath")  # the text as it is: "" when empty


def test_slicer_model_choice_is_wired_to_the_path_field_note_and_engine() -> None:
    """The model combo box (registry models + a custom file) enables the path field and sets
    the licence note (``--weights`` from it: ``panel.run_request``, tested headless in
    test_slicer_logic.py); older scenes are repaired before they are read."""
    assert bound_widgets()["model"] == "modelComboBox"
    assert parameter_types()["model"] == "Model"
    update = ast.unparse(method("TTTInterpolationWidget", "updateGUI"))
    assert "self.ui.weightsPathLineEdit.enabled = p.model is Model.CUSTOM" in update
    assert "self.ui.modelInfoLabel.text = logic.model_note(p.model, p.weightsFile)" in update
    calls = calls_in_order(method("TTTInterpolationLogic", "getParameterNode"))
    assert calls.index("logic.repair_saved_parameters") < calls.index(
        "TTTInterpolationParameterNode")
    assert "customWeights" not in "\n".join(p.read_text() for p in MODULE_SOURCES)


def test_slicer_evaluation_protocol_is_chosen_in_the_evaluation_section() -> None:
    """The protocol combo box sits in the Evaluation section, bound to the parameter node;
    frames A and B show only where they count; the info line and Apply follow the protocol
    (and ``panel.run_request`` passes it on: tested headless in test_slicer_logic.py)."""
    section = next(w for w in ET.parse(UI_FILE).getroot().iter("widget")
                   if w.get("name") == "evaluationCollapsibleButton")
    assert "evaluationProtocolComboBox" in {w.get("name") for w in section.iter("widget")}
    assert bound_widgets()["evaluationProtocol"] == "evaluationProtocolComboBox"
    assert parameter_types()["evaluationProtocol"] == "EvaluationProtocol"
    update = ast.unparse(method("TTTInterpolationWidget", "updateGUI"))
    assert ("self.ui.betweenFramesWidget.visible = p.mode is Mode.BETWEEN or (evaluate and "
            "p.evaluationProtocol is EvaluationProtocol.BETWEEN)") in update
    assert "p.evaluationProtocol)" in update  # panel.input_info(..., p.evaluationProtocol)


MODULE_FILE_MAX_LINES = 300


def test_slicer_module_file_stays_thin() -> None:
    """The module file is the widget's wiring and the module's description, nothing else:
    texts, helpers, the logic, sample data and the parameter node live in the SlicerLib."""
    source = MODULE_FILE.read_text()
    assert len(source.splitlines()) <= MODULE_FILE_MAX_LINES
    tree = ast.parse(source)
    defined = [n.name for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef)]
    assert defined == ["TTTInterpolation", "TTTInterpolationWidget"]
    constants = [ast.unparse(n.targets[0]) for n in tree.body if isinstance(n, ast.Assign)]
    assert constants == ["__all__"]
