"""Starting Spark for tastebud: the PySpark import with a clear error, the master URL
checked before a JVM is started, and quiet local sessions.

Why a helper rather than ``SparkSession.builder`` in every caller: the defaults that make a
local run usable (errors-only logging, the driver's own Python for the workers, a shuffle
partition count sized to the cores) and the translation of Spark's start-up failures into
one-line :class:`~tastebud.errors.TastebudError` messages belong in one place.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tastebud.errors import InvalidInputError, TastebudError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

#: Master URLs Spark 4 accepts (``local``, ``local[N]``, ``local[*]``, ``local[N,F]``,
#: ``local-cluster[N,C,M]``, ``spark://host:port[,host:port]``, ``yarn``, ``k8s://...``).
_MASTER = re.compile(
    r"local|local\[(\*|[1-9]\d*)(,\s*[1-9]\d*)?\]|local-cluster\[\d+,\s*\d+,\s*\d+\]"
    r"|spark://[^\s/:]+(:\d+)?(,[^\s/:]+(:\d+)?)*|yarn|k8s://\S+"
)
_LOCAL = re.compile(r"local(\[(\*|\d+)(,\s*\d+)?\])?")
_LOG_CONFIG = Path(__file__).with_name("log4j2.properties")
INSTALL_HINT = "install it with: pip install 'tastebud[spark]' (PySpark 4, Java 17+)"


def require_pyspark() -> Any:
    """The ``pyspark`` module, or a :class:`TastebudError` naming the extra to install."""
    try:
        import pyspark
    except ImportError:
        raise TastebudError(f"tastebud.spark needs PySpark; {INSTALL_HINT}") from None
    major = int(str(pyspark.__version__).split(".")[0])
    if major < 4:
        raise TastebudError(
            f"tastebud.spark needs PySpark 4.x, found {pyspark.__version__}; {INSTALL_HINT}"
        )
    return pyspark


def check_master(master: str) -> str:
    """``master`` stripped, or an :class:`InvalidInputError` when Spark would not take it
    (checked here so a typo costs no JVM start and reads as one line)."""
    text = str(master).strip()
    if not _MASTER.fullmatch(text):
        raise InvalidInputError(
            f"master {master!r} is not a Spark master URL; use local[N], local[*], yarn, "
            "spark://HOST:PORT or k8s://https://HOST:PORT"
        )
    return text


def local_cores(master: str) -> int | None:
    """The cores of a ``local[...]`` master (``None`` for a cluster)."""
    match = _LOCAL.fullmatch(master)
    if match is None:
        return None
    count = match.group(2)
    if count is None:
        return 1
    return (os.cpu_count() or 1) if count == "*" else int(count)


def spark_session(
    master: str = "local[2]",
    *,
    app_name: str = "tastebud",
    conf: Mapping[str, str] | None = None,
    quiet: bool = True,
    checkpoint_dir: str | None = None,
) -> SparkSession:
    """A SparkSession on ``master`` (the active one when a session is already running in
    this process: Spark allows one per process, and its settings then stay as they were).

    Parameters
    ----------
    master:
        Spark master URL, checked before anything starts (:func:`check_master`).
    conf:
        Spark settings (``spark.executor.memory`` ...); they win over the defaults below.
    quiet:
        Errors-only logging and no progress bars or web UI (what tests and the command
        line want); ``False`` keeps Spark's own logging and UI.
    checkpoint_dir:
        Where ALS checkpoints its factors every few iterations (cuts the lineage of long
        runs; on a cluster a shared file system such as ``hdfs:///tmp/ckpt``).

    Notes
    -----
    Defaults for a ``local[N]`` master: the workers run this process's Python
    (``PYSPARK_PYTHON`` when unset), ``spark.sql.shuffle.partitions`` is 4N instead of 200
    (small jobs are dominated by task overhead otherwise) and the driver binds to
    127.0.0.1. On a cluster only the logging defaults apply.
    """
    require_pyspark()
    master = check_master(master)
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        if checkpoint_dir:
            active.sparkContext.setCheckpointDir(checkpoint_dir)
        return active
    # naive date/time text is read as UTC, as the library reads it
    settings: dict[str, str] = {"spark.sql.session.timeZone": "UTC"}
    cores = local_cores(master)
    if cores is not None:
        settings["spark.sql.shuffle.partitions"] = str(4 * cores)
        settings["spark.driver.host"] = "127.0.0.1"
        settings["spark.driver.bindAddress"] = "127.0.0.1"
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if quiet:
        settings["spark.ui.showConsoleProgress"] = "false"
        settings["spark.ui.enabled"] = "false"
        settings["spark.log.level"] = "ERROR"
        settings["spark.driver.extraJavaOptions"] = (
            f"-Dlog4j2.configurationFile=file:{_LOG_CONFIG.as_posix()}"
        )
    settings.update({str(k): str(v) for k, v in (conf or {}).items()})
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        with warnings.catch_warnings():  # PySpark 4.3 warns of pandas 3 at every start
            warnings.filterwarnings("ignore", "PySpark does not yet fully", FutureWarning)
            session = builder.getOrCreate()
    except Exception as err:  # noqa: BLE001 -- py4j and the launcher fail in many ways
        raise TastebudError(f"could not start Spark on {master}: {_first_line(err)}") from None
    if quiet:
        session.sparkContext.setLogLevel("ERROR")
    if checkpoint_dir:
        session.sparkContext.setCheckpointDir(checkpoint_dir)
    return session


def _first_line(err: BaseException) -> str:
    """The useful line of a Spark/py4j error: its first non-empty line, without the Java
    stack; a gateway that never started is named as the missing Java it usually is."""
    text = str(err)
    if "JAVA_GATEWAY_EXITED" in text or "Java gateway process exited" in text:
        return "the Java process exited at start (is Java 17+ installed, JAVA_HOME set?)"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def spark_error(err: BaseException) -> str:
    """One line from a Spark error (an ``AnalysisException``'s message without its query
    plan and stack), for the :class:`TastebudError` that replaces it."""
    text = getattr(err, "getMessage", None)
    message = str(text() if callable(text) else err)
    message = message.split("\n\tat ")[0].split("JVM stacktrace:")[0]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    first = lines[0] if lines else type(err).__name__
    return first if len(first) <= 300 else first[:297] + "..."
