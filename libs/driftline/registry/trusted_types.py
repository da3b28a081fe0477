"""The exact type names a model artifact may build, and the names it never may.

How the allow-list was derived (skops 0.16, scikit-learn 1.9, numpy 2.4, scipy 1.17):
every recipe of :mod:`driftline.models` (logistic_regression,
hist_gradient_boosting, random_forest, fitted inside ``build_pipeline`` with
numeric and categorical features) and a set of common user pipelines
(StandardScaler, MinMaxScaler, RobustScaler, OneHotEncoder, OrdinalEncoder,
SimpleImputer, PolynomialFeatures, KBinsDiscretizer, PCA, SelectKBest,
FeatureUnion, ColumnTransformer, Pipeline, GradientBoosting*, HistGradientBoosting*,
RandomForest*, ExtraTrees*, DecisionTree*, SGDClassifier, Ridge, LinearRegression,
GaussianNB, KNeighborsClassifier, SVC, CalibratedClassifierCV) were serialized
with skops; for each artifact we recorded what ``skops.io.get_untrusted_types``
reports and every ``module.Class`` the artifact's schema names (including the
ones skops trusts by default, which driftline does not take on faith).
``tests/unit/test_artifact_trusted_types.py`` repeats that derivation and fails
if a recipe needs a name that is not listed here.

The public scikit-learn estimator classes come from
``sklearn.utils.all_estimators()``: they are classes whose constructors only
store parameters. Everything else is spelled out below. There are no functions
in the list (not even numpy ufuncs or ``f_classif``): a function in an
artifact is a callable the attacker picked, so a user who needs one (e.g.
``numpy.log1p`` in a FunctionTransformer) names it in ``DRIFTLINE_TRUSTED_TYPES``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sklearn.utils import all_estimators

# Plain data containers and scalars skops writes for any estimator's attributes.
BUILTIN_DATA_TYPES = frozenset({
    "builtins.bool", "builtins.bytearray", "builtins.bytes", "builtins.complex", "builtins.dict",
    "builtins.float", "builtins.frozenset", "builtins.int", "builtins.list", "builtins.set",
    "builtins.slice", "builtins.str", "builtins.tuple",
    "collections.OrderedDict",
})

NUMPY_TYPES = frozenset({
    "numpy.ndarray", "numpy.dtype", "numpy.ma.MaskedArray",
    "numpy.random._generator.Generator", "numpy.random.mtrand.RandomState",
    "numpy.random.MT19937", "numpy.random.PCG64", "numpy.random.PCG64DXSM", "numpy.random.Philox",
    "numpy.random.SFC64",
    # scalar types (np.sctypeDict), which skops stores as 0-d arrays of that type
    "numpy.bool", "numpy.bytes_", "numpy.clongdouble", "numpy.complex128", "numpy.complex64",
    "numpy.datetime64", "numpy.float16", "numpy.float32", "numpy.float64", "numpy.int16",
    "numpy.int32", "numpy.int64", "numpy.int8", "numpy.longdouble", "numpy.longlong", "numpy.object_",
    "numpy.str_", "numpy.timedelta64", "numpy.uint16", "numpy.uint32", "numpy.uint64", "numpy.uint8",
    "numpy.ulonglong", "numpy.void",
})

SCIPY_TYPES = frozenset({
    "scipy.sparse._bsr.bsr_matrix", "scipy.sparse._coo.coo_array", "scipy.sparse._coo.coo_matrix",
    "scipy.sparse._csc.csc_array", "scipy.sparse._csc.csc_matrix", "scipy.sparse._csr.csr_array",
    "scipy.sparse._csr.csr_matrix", "scipy.sparse._dia.dia_matrix", "scipy.sparse._dok.dok_matrix",
    "scipy.sparse._lil.lil_matrix",
})

# Fitted state of public estimators that is not itself a public estimator.
# Tree and TreePredictor hold node arrays that scikit-learn indexes without
# bounds checks (skops leaves them untrusted for that reason); the recipes need
# them, so driftline trusts them and relies on sha256, the registration token
# and the sandboxed load check for who may supply one.
SKLEARN_INTERNAL_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.link.HalfLogitLink", "sklearn._loss.link.IdentityLink", "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogLink", "sklearn._loss.link.LogitLink", "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.loss.AbsoluteError", "sklearn._loss.loss.ExponentialLoss",
    "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss.loss.HalfGammaLoss",
    "sklearn._loss.loss.HalfMultinomialLoss", "sklearn._loss.loss.HalfPoissonLoss",
    "sklearn._loss.loss.HalfSquaredError", "sklearn._loss.loss.HuberLoss", "sklearn._loss.loss.PinballLoss",
    "sklearn._loss._loss.CyAbsoluteError", "sklearn._loss._loss.CyExponentialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss._loss.CyHalfGammaLoss",
    "sklearn._loss._loss.CyHalfMultinomialLoss", "sklearn._loss._loss.CyHalfPoissonLoss",
    "sklearn._loss._loss.CyHalfSquaredError", "sklearn._loss._loss.CyHuberLoss",
    "sklearn._loss._loss.CyPinballLoss",
    "sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration",
    "sklearn.neighbors._ball_tree.BallTree", "sklearn.neighbors._kd_tree.KDTree",
    # not PyFuncDistance64: it wraps an arbitrary Python function
    "sklearn.metrics._dist_metrics.ChebyshevDistance64", "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64", "sklearn.metrics._dist_metrics.MinkowskiDistance64",
})

SKLEARN_ESTIMATOR_TYPES = frozenset(
    f"{cls.__module__}.{cls.__qualname__}" for _, cls in all_estimators()
    if cls.__module__.startswith("sklearn.")
)

TRUSTED_TYPES: frozenset[str] = (
    BUILTIN_DATA_TYPES | NUMPY_TYPES | SCIPY_TYPES | SKLEARN_INTERNAL_TYPES | SKLEARN_ESTIMATOR_TYPES
)
"""Every name an artifact may build without configuration."""

# Modules whose every member is refused, even when configured: they run code,
# reach files, processes or the network, or unpickle. Matched as the module
# itself or any submodule (``os`` covers ``os.path.join``).
NEVER_TRUSTED_MODULES = (
    "builtins", "__builtin__", "os", "posix", "nt", "sys", "subprocess", "shutil", "socket", "ssl",
    "select", "signal", "pty", "tty", "fcntl", "resource", "ctypes", "_ctypes", "cffi", "mmap",
    "pickle", "_pickle", "cPickle", "copyreg", "copy_reg", "marshal", "shelve", "dill", "cloudpickle",
    "joblib", "importlib", "pkgutil", "runpy", "imp", "zipimport", "code", "codeop", "pdb", "bdb",
    "timeit", "trace", "profile", "cProfile", "inspect", "gc", "types", "functools", "operator",
    "_operator", "io", "_io", "pathlib", "tempfile", "glob", "fileinput", "webbrowser", "urllib",
    "http", "ftplib", "smtplib", "telnetlib", "xmlrpc", "asyncio", "multiprocessing", "threading",
    "_thread", "concurrent", "logging", "atexit", "sysconfig", "platform", "numpy.testing",
    "numpy.distutils", "numpy.f2py", "numpy.ctypeslib", "numpy.lib.format", "numpy.lib.npyio",
    "numpy.lib._npyio_impl", "numpy.lib._datasource", "numpy.lib._utils_impl", "scipy._lib",
    "scipy.io", "sklearn.datasets", "sklearn.utils._testing", "sklearn.externals",
)

# Single callables elsewhere that read or write files, reinterpret raw memory or unpickle.
NEVER_TRUSTED_NAMES = frozenset({
    "numpy.load", "numpy.loads", "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt",
    "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile", "numpy.frombuffer", "numpy.fromstring",
    "numpy.fromregex", "numpy.memmap", "numpy.ndarray.tofile", "numpy.ndarray.dump",
    "numpy.rec.fromfile", "numpy.lib.stride_tricks.as_strided",
    "sklearn.metrics._dist_metrics.PyFuncDistance64",
})

# module.Qualified.Name: identifiers joined by dots, at least one dot, no wildcards.
_EXACT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


def never_trusted(name: str) -> bool:
    """Whether ``name`` is refused whatever the configuration says."""
    if name in BUILTIN_DATA_TYPES:  # the only members of builtins an artifact may build
        return False
    if name in NEVER_TRUSTED_NAMES:
        return True
    return any(name == module or name.startswith(module + ".") for module in NEVER_TRUSTED_MODULES)


def refused_by_default(name: str) -> bool:
    """Whether ``name`` needs configuration to be trusted (or can never be)."""
    return name not in TRUSTED_TYPES or never_trusted(name)


def validated_extra_types(names: Iterable[str]) -> frozenset[str]:
    """The user's additional trusted type names, checked to be exact and not dangerous.

    Parameters
    ----------
    names
        Fully qualified names such as ``"mypackage.features.RatioTransformer"``,
        usually from ``DRIFTLINE_TRUSTED_TYPES``.

    Raises
    ------
    ValueError
        A name is not an exact dotted name (``"mypackage.*"`` trusts nothing), or
        it is one driftline never trusts (``builtins.eval``, ``os.system``, ...).
    """
    names = [names] if isinstance(names, str) else list(names)
    malformed = [n for n in names if not isinstance(n, str) or not _EXACT_NAME.fullmatch(n)]
    if malformed:
        raise ValueError(
            f"trusted types must be exact names such as 'mypackage.module.Class', not {malformed!r}")
    dangerous = sorted(n for n in names if never_trusted(n))
    if dangerous:
        raise ValueError(
            f"refusing to trust {dangerous}: driftline never lets an artifact build these, "
            "because building them can run code, touch files or processes, or unpickle")
    return frozenset(names)
