// The Python face of the engine (module mnist_engine._core; users import mnist_engine). Input
// checking lives here, next to the numpy types it inspects, so a bad array is rejected with a
// message naming what was expected and what arrived before the engine sees it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <sstream>

#include "dispatch.h"
#include "mnist_engine/crc32c.h"
#include "mnist_engine/engine.h"
#include "thread_pool.h"

namespace py = pybind11;
using mnist_engine::Engine;

namespace {

std::string shape_of(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

std::string expected_shapes(uint32_t width) {
  std::ostringstream s;
  s << "(N, " << width << ")";
  const auto side = static_cast<uint32_t>(std::lround(std::sqrt(double(width))));
  if (side * side == width) s << ", (N, " << side << ", " << side << ") or (N, " << side << ", " << side << ", 1)";
  return s.str();
}

struct Batch {
  py::array data;  // C-contiguous uint8 or float32, rows x width
  bool pixels;     // true: uint8 raw pixels
  size_t rows;
};

// Accepts uint8 (raw pixels) or any real floating dtype (converted to float32, already scaled), as
// (N, width) or (N, a, b) with a * b = width, in any memory order. Everything else is an error.
// A view into a bytes buffer at an odd offset can be C-contiguous and still misaligned; the
// kernels read floats, so such an input is copied (numpy's own allocations are aligned).
bool is_aligned(const py::array& a) { return a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_; }

// The common case, a C-contiguous uint8 or float32 array of the right shape, is recognised with a
// few field reads: a batch-1 call is only microseconds, and the general path's conversions
// (PyArray_FromAny twice) were a fifth of it.
bool fast_batch(const py::handle& obj, uint32_t width, Batch& out) {
  const bool pixels = py::array_t<uint8_t, py::array::c_style>::check_(obj);
  if (!pixels && !py::array_t<float, py::array::c_style>::check_(obj)) return false;
  auto a = py::reinterpret_borrow<py::array>(obj);
  if (a.ndim() != 2 || a.shape(1) != py::ssize_t(width) || !is_aligned(a)) return false;
  out = {a, pixels, static_cast<size_t>(a.shape(0))};
  return true;
}

Batch to_batch(const py::handle& obj, uint32_t width) {
  if (Batch b; fast_batch(obj, width, b)) return b;
  py::array a = py::array::ensure(obj);
  if (!a) {
    PyErr_Clear();
    throw py::type_error("expected a numpy array of uint8 pixels or float32 values, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  }
  const char kind = a.dtype().kind();
  const bool pixels = kind == 'u' && a.itemsize() == 1;
  if (!pixels && kind != 'f') {
    std::string hint;
    if (kind == 'i' || kind == 'u')
      hint = " (for raw 0..255 pixels use x.astype(np.uint8); for scaled values use float32)";
    throw py::type_error("expected uint8 pixels or float32 values, got dtype " +
                         std::string(py::str(a.dtype())) + hint);
  }
  // (N, H, W, 1) and (N, 1, H, W), one channel, hold the same row either way (a CNN's Keras input).
  const bool one_channel = a.ndim() == 4 && (a.shape(3) == 1 || a.shape(1) == 1);
  const bool shape_ok = (a.ndim() == 2 && a.shape(1) == py::ssize_t(width)) ||
                        (a.ndim() == 3 && a.shape(1) * a.shape(2) == py::ssize_t(width)) ||
                        (one_channel && a.shape(1) * a.shape(2) * a.shape(3) == py::ssize_t(width));
  if (!shape_ok) {
    std::string hint = a.ndim() == 1 ? " (a single image needs a batch axis: x[None])" : "";
    throw py::value_error("expected input of shape " + expected_shapes(width) + ", got " +
                          shape_of(a) + " " + std::string(py::str(a.dtype())) + hint);
  }
  const auto rows = static_cast<size_t>(a.shape(0));
  // ensure() copies only when the array is not already C-contiguous in the wanted dtype, so
  // Fortran-ordered, strided, reversed or big-endian inputs are handled and the common case is free.
  if (pixels)
    return {py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(a), true, rows};
  py::array floats = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(a);
  if (!is_aligned(floats)) floats = py::array_t<float, py::array::c_style>(floats.request());
  return {floats, false, rows};
}

// threads=None (the default) or an integer in range; "2", 2.0 and True are refused by name rather
// than converted, and a huge int is reported as out of range rather than overflowing.
int to_threads(const py::object& threads) {
  if (threads.is_none()) return 0;
  if (PyBool_Check(threads.ptr()) || !PyIndex_Check(threads.ptr()))
    throw py::type_error("expected threads=None or an int in 1.." + std::to_string(mnist_engine::max_threads()) +
                         ", got " + std::string(py::str(py::type::of(threads).attr("__name__"))) + " " +
                         std::string(py::repr(threads)));
  int overflow = 0;
  const py::int_ value = py::reinterpret_steal<py::int_>(PyNumber_Index(threads.ptr()));
  long long n = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (overflow) n = overflow > 0 ? LLONG_MAX : LLONG_MIN;
  return mnist_engine::check_threads(n, "threads=None or threads");
}

// The input-range check's Python classes (mnist_engine.InputRangeWarning, InputRangeError), made
// at import; the module keeps them alive.
PyObject* g_range_warning = nullptr;
PyObject* g_range_error = nullptr;

enum class RangeCheck { Warn, Raise, Ignore };
RangeCheck to_range_check(const std::string& name) {
  if (name == "warn") return RangeCheck::Warn;
  if (name == "raise") return RangeCheck::Raise;
  if (name == "ignore") return RangeCheck::Ignore;
  throw py::value_error("expected range_check='warn', 'raise' or 'ignore', got '" + name + "'");
}

// Float input far outside (or far inside) the range the model was checked on: answered, but never
// silently. A warning once per engine, or InputRangeError for every such call.
// A range problem (Engine::input_range_problem of float input, Engine::pixel_input_problem of uint8)
// answered as the caller's range_check asks.
void report_range_problem(const Engine& e, const std::string& problem, RangeCheck mode) {
  if (problem.empty() || mode == RangeCheck::Ignore) return;
  if (mode == RangeCheck::Raise) {
    PyErr_SetString(g_range_error, problem.c_str());
    throw py::error_already_set();
  }
  if (e.first_range_warning() && PyErr_WarnEx(g_range_warning, problem.c_str(), 1) < 0)
    throw py::error_already_set();  // warnings turned into errors
}

py::array_t<float> predict(const Engine& e, const py::handle& x, const py::object& threads,
                           const std::string& range_check) {
  const Batch b = to_batch(x, e.input_width());
  const int t = to_threads(threads);
  const RangeCheck mode = to_range_check(range_check);
  py::array_t<float> y({static_cast<py::ssize_t>(b.rows), static_cast<py::ssize_t>(e.output_width())});
  float* out = y.mutable_data();
  if (b.pixels) {
    report_range_problem(e, e.pixel_input_problem(), mode);
    const auto* in = static_cast<const uint8_t*>(b.data.data());
    py::gil_scoped_release release;
    e.predict(in, b.rows, out, t);
    return y;
  }
  const auto* in = static_cast<const float*>(b.data.data());
  mnist_engine::InputRange seen;
  {
    py::gil_scoped_release release;
    e.predict(in, b.rows, out, t, mode == RangeCheck::Ignore ? nullptr : &seen);
  }
  if (mode != RangeCheck::Ignore) report_range_problem(e, e.input_range_problem(seen), mode);
  return y;
}

// predict, then its outputs as probabilities (Engine::to_probabilities): what a reader is shown.
py::array_t<float> predict_proba(const Engine& e, const py::handle& x, const py::object& threads,
                                 const std::string& range_check) {
  if (e.output_kind() == mnist_engine::OutputKind::Values) e.to_probabilities(nullptr, 0);  // its error, before any work
  py::array_t<float> y = predict(e, x, threads, range_check);
  e.to_probabilities(y.mutable_data(), static_cast<size_t>(y.shape(0)));
  return y;
}

// Outputs of this model (from predict, perhaps of a batch gathered from several requests) as probabilities.
py::array_t<float> outputs_to_probabilities(const Engine& e, const py::handle& outputs) {
  auto y = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(outputs);
  if (!y || y.ndim() != 2 || static_cast<size_t>(y.shape(1)) != e.output_width())
    throw py::value_error("expected this model's outputs, shape (N, " + std::to_string(e.output_width()) +
                          ") float32, got " + std::string(py::str(py::getattr(outputs, "shape", py::str("no shape")))));
  py::array_t<float> p({y.shape(0), y.shape(1)});
  std::copy(y.data(), y.data() + y.size(), p.mutable_data());
  e.to_probabilities(p.mutable_data(), static_cast<size_t>(p.shape(0)));
  return p;
}

// A one-output model is a binary classifier: its decision is output > threshold, as Keras users
// write `model.predict(x) > 0.5` and as scikit-learn's binary predict does (strictly greater).
float binary_threshold(mnist_engine::Activation a) {
  using mnist_engine::Activation;
  switch (a) {
    case Activation::Sigmoid: return 0.5f;
    case Activation::Linear:  // a logit
    case Activation::Tanh:    // odd, like a logit: tanh(z) > 0 exactly when z > 0
    case Activation::Relu: return 0.0f;  // relu(z) > 0 exactly when z > 0
    case Activation::Softmax: break;
  }
  throw py::value_error("classify: a one-output softmax model always outputs 1.0, so it has no decision; "
                        "use predict(), or export the model with a sigmoid or linear output");
}

py::object classify(const Engine& e, const py::handle& x, const py::object& threads, const std::string& range_check) {
  const size_t width = e.output_width();
  const float threshold = width == 1 ? binary_threshold(e.output_activation()) : 0.0f;
  const py::array_t<float> p = predict(e, x, threads, range_check);
  const auto rows = static_cast<size_t>(p.shape(0));
  py::array_t<int64_t> index(static_cast<py::ssize_t>(rows));
  const float* in = p.data();
  int64_t* out = index.mutable_data();
  for (size_t r = 0; r < rows; ++r) {
    const float* row = in + r * width;
    out[r] = width == 1 ? int64_t(row[0] > threshold) : std::max_element(row, row + width) - row;
  }
  const auto& classes = e.classes();
  if (classes.kind == mnist_engine::ClassLabels::Int)
    for (size_t r = 0; r < rows; ++r) out[r] = classes.ints[size_t(out[r])];
  if (classes.kind == mnist_engine::ClassLabels::Str)
    return py::module_::import("numpy").attr("asarray")(classes.strs)[index];
  if (classes.kind == mnist_engine::ClassLabels::Float)
    return py::module_::import("numpy").attr("asarray")(classes.floats, "float64")[index];
  return std::move(index);
}

py::object classes_of(const Engine& e) {
  const auto& c = e.classes();
  if (c.kind == mnist_engine::ClassLabels::Int) return py::tuple(py::cast(c.ints));
  if (c.kind == mnist_engine::ClassLabels::Str) return py::tuple(py::cast(c.strs));
  if (c.kind == mnist_engine::ClassLabels::Float) return py::tuple(py::cast(c.floats));
  return py::none();
}

std::string describe(const Engine& e) {
  std::ostringstream s;
  s << "<mnist_engine.Engine " << e.input_width();
  for (size_t i = 0; i < e.layers().size(); ++i) {
    const auto& l = e.layers()[i];
    s << " -> " << l.output_width << " "
      << (l.op == mnist_engine::Op::Dense ? "" : std::string(mnist_engine::op_name(l.op)) + " ")
      << mnist_engine::activation_name(l.activation) << (e.runs_winograd(i) ? " (Winograd)" : "")
      << (e.runs_fused(i) ? " (inside the conv)" : "");
  }
  s << ", kernel=" << e.kernel_name();
  if (e.kernel_for_rows(1) != e.kernel_name()) s << " (" << e.kernel_for_rows(1) << " for small batches)";
  for (const auto& [k, v] : e.metadata())
    if (k == "source") s << ", source=" << py::repr(py::str(v)).cast<std::string>();
  s << ">";
  return s.str();
}

py::buffer_info byte_buffer(const py::buffer& data) {
  py::buffer_info info = data.request();
  if (info.ndim != 1 || info.itemsize != 1 || info.strides[0] != 1)
    throw py::type_error("expected bytes, bytearray or a contiguous 1-D byte buffer");
  return info;
}

template <uint32_t (*Crc)(const uint8_t*, size_t, uint32_t)>
uint32_t crc_of(const py::buffer& data, uint32_t crc) {
  const py::buffer_info info = byte_buffer(data);
  return Crc(static_cast<const uint8_t*>(info.ptr), static_cast<size_t>(info.size), crc);
}

std::shared_ptr<Engine> engine_from_buffer(const py::buffer& data, bool verify, const std::string& kernel,
                                           bool skip_zeros, const py::object& precision_arg,
                                           const py::object& threads_arg) {
  // No precision: the named kernel's, else the exact fp32.
  mnist_engine::Precision precision = mnist_engine::Precision::Fp32;
  if (!precision_arg.is_none())
    precision = mnist_engine::parse_precision(precision_arg.cast<std::string>());
  else
    for (const auto& k : mnist_engine::kernel_table())
      if (kernel == k.name) precision = k.precision;
  const int threads = to_threads(threads_arg);
  const py::buffer_info info = byte_buffer(data);
  const auto* bytes = static_cast<const uint8_t*>(info.ptr);
  const auto size = static_cast<size_t>(info.size);
  // The loader reads the buffer several times (checksum, then each rule, then the weights) with
  // the GIL released. A bytes object cannot change meanwhile; anything else (bytearray, mmap, a
  // writable memoryview) could be changed by another thread or process between the checksum and
  // the parse, so it is copied once, under the GIL.
  std::vector<uint8_t> copy;
  if (!PyBytes_CheckExact(data.ptr())) {
    copy.assign(bytes, bytes + size);
    bytes = copy.data();
  }
  py::gil_scoped_release release;
  return std::const_pointer_cast<Engine>(
      Engine::from_bytes(bytes, size, verify, kernel, skip_zeros, precision, threads));
}

// Pickling (multiprocessing, concurrent.futures, joblib, Dask): the file's bytes and the load
// options travel, and the receiving process parses, verifies and packs again for its own CPU.
// The state is a tuple led by its layout's version, so a later layout can still read this one.
constexpr int kPickleVersion = 1;

py::tuple engine_state(const Engine& e) {
  const auto& file = e.file_bytes();
  return py::make_tuple(kPickleVersion, py::bytes(reinterpret_cast<const char*>(file.data()), file.size()),
                        e.kernel_request(), std::string(mnist_engine::precision_name(e.precision())),
                        e.threads(), e.skip_zeros(), e.verified());
}

std::shared_ptr<Engine> engine_from_state(const py::tuple& state) {
  if (state.size() != 7 || !py::isinstance<py::int_>(state[0]) || state[0].cast<int>() != kPickleVersion)
    throw py::value_error("cannot unpickle this Engine: expected a version-" + std::to_string(kPickleVersion) +
                          " state of 7 items, got " + std::string(py::repr(state[0])) + " with " +
                          std::to_string(state.size()) + " items (pickled by another mnist_engine version?)");
  // A thread count is a default, not a requirement: a machine with fewer CPUs caps it.
  const int threads = std::min(state[4].cast<int>(), mnist_engine::max_threads());
  return engine_from_buffer(state[1].cast<py::buffer>(), state[6].cast<bool>(), state[2].cast<std::string>(),
                            state[5].cast<bool>(), state[3], threads ? py::object(py::int_(threads)) : py::none());
}

// scikit-learn's `classes_`: what classify returns per output, as an array.
py::array sklearn_classes(const Engine& e) {
  const auto& c = e.classes();
  py::module_ np = py::module_::import("numpy");
  if (c.kind == mnist_engine::ClassLabels::Int) return np.attr("asarray")(c.ints, "int64");
  if (c.kind == mnist_engine::ClassLabels::Str) return np.attr("asarray")(c.strs);
  if (c.kind == mnist_engine::ClassLabels::Float) return np.attr("asarray")(c.floats, "float64");
  return np.attr("arange")(e.output_width() == 1 ? 2 : e.output_width(), py::arg("dtype") = "int64");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "mnist_engine's compiled core; import mnist_engine instead.";
  m.attr("__version__") = MNIST_ENGINE_VERSION;
  m.attr("FORMAT_VERSION") = mnist_engine::kFormatVersion;
  // The format's tables and constants, so the Python writer and the tests read them from the one
  // place that defines them (cpp/include/mnist_engine/model_file.h, and vocabulary.h for the
  // activations and ops).
  {
    namespace me = mnist_engine;
    py::list activations, rules, required;
    py::dict activation_parameters;
    for (const auto& a : me::kActivations) {
      activations.append(a.name);
      py::list names;
      std::string all = a.parameters;
      for (size_t start = 0; start < all.size();) {
        const size_t comma = std::min(all.find(',', start), all.size());
        names.append(all.substr(start, comma - start));
        start = comma + 1;
      }
      activation_parameters[a.name] = py::make_tuple(py::tuple(names), a.per_unit, a.since_version);
    }
    m.attr("ACTIVATION_PARAMETERS") = activation_parameters;
    py::list ops, output_kinds;
    for (const char* name : me::kOpNames) ops.append(name);
    m.attr("OPS") = py::tuple(ops);
    for (const char* name : me::kOutputKindNames) output_kinds.append(name);
    m.attr("OUTPUT_KINDS") = py::tuple(output_kinds);
    for (const auto& r : me::kRules) rules.append(py::make_tuple(int(r.rule), r.name));
    for (const char* key : me::kRequiredMetadata) required.append(key);
    m.attr("ACTIVATIONS") = py::tuple(activations);
    m.attr("FORMAT_RULES") = py::tuple(rules);
    py::dict f;
    f["version"] = me::kFormatVersion;
    f["max_layers"] = me::kMaxLayers;
    f["max_width"] = me::kMaxWidth;
    f["max_references"] = me::kMaxReferences;
    f["max_metadata"] = me::kMaxMetadata;
    f["max_key_length"] = me::kMaxKeyLength;
    f["max_value_length"] = me::kMaxValueLength;
    f["max_tolerance"] = double(me::kMaxTolerance);
    f["max_parameters"] = me::kMaxParameters;
    f["max_multiply_adds"] = me::kMaxMultiplyAdds;
    f["required_metadata"] = py::tuple(required);
    m.attr("FORMAT") = f;
  }

  g_range_warning = PyErr_NewExceptionWithDoc(
      "mnist_engine.InputRangeWarning",
      "Inputs unlike the ones a model was checked on: float input far outside (or far inside) the range of "
      "its reference images, or, when exporting, reference images outside what input_scale maps pixels to. "
      "The message names the expected range, what arrived and the likely fix.",
      PyExc_UserWarning, nullptr);
  g_range_error = PyErr_NewExceptionWithDoc(
      "mnist_engine.InputRangeError",
      "predict(..., range_check='raise') on float input far outside (or far inside) the range the model was "
      "checked on; a ValueError with the same message as InputRangeWarning.",
      PyExc_ValueError, nullptr);
  if (!g_range_warning || !g_range_error) throw py::error_already_set();
  m.attr("InputRangeWarning") = py::reinterpret_steal<py::object>(g_range_warning);
  m.attr("InputRangeError") = py::reinterpret_steal<py::object>(g_range_error);

  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<py::object> format_error;
  format_error.call_once_and_store_result([&]() {
    return py::object(py::exception<mnist_engine::FormatError>(m, "FormatError", PyExc_ValueError));
  });
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const mnist_engine::FormatError& e) {
      py::object type = format_error.get_stored();
      py::object instance = type(e.what());
      instance.attr("rule") = e.rule();
      instance.attr("offset") = e.offset();
      PyErr_SetObject(type.ptr(), instance.ptr());
    }
  });

  m.def("crc32c", &crc_of<mnist_engine::crc32c>, py::arg("data"), py::arg("crc") = 0,
        "CRC32C (Castagnoli) of a bytes-like object.");
  m.def("_crc32c_portable", &crc_of<mnist_engine::crc32c_portable>, py::arg("data"), py::arg("crc") = 0,
        "The table-driven CRC32C, for testing the fast path.");
  m.def("available_kernels",
        [](const py::object& precision) {
          if (precision.is_none()) return mnist_engine::available_kernel_names();
          return mnist_engine::available_kernel_names(mnist_engine::parse_precision(precision.cast<std::string>()));
        },
        py::arg("precision") = py::none(),
        "Kernels this CPU can run, best first: every precision's, or those of one ('fp32', 'bf16', 'int8').");
  m.def("available_precisions", &mnist_engine::available_precision_names,
        "Precisions this CPU runs with a SIMD kernel ('fp32' always): what load(precision=...) accepts.");
  m.def("kernel_precision", [](const std::string& name) {
    for (const auto& k : mnist_engine::kernel_table())
      if (name == k.name) return std::string(mnist_engine::precision_name(k.precision));
    return std::string(mnist_engine::precision_name(mnist_engine::select_kernel(name).precision));  // throws
  }, py::arg("kernel"), "The precision a kernel of this build computes.");
  m.def("cpu_runs_amx", &mnist_engine::cpu_runs_amx,
        "Whether this CPU, OS and process run the AMX int8 and bf16 instructions themselves.");
  m.def("kernel_min_rows", [](const std::string& name) {
    for (const auto& k : mnist_engine::kernel_table())
      if (name == k.name) return k.min_rows;
    return mnist_engine::select_kernel(name).min_rows;  // throws
  }, py::arg("kernel"), "The fewest rows of a tile an automatically chosen kernel runs (1 but for AMX).");
  m.def("compiled_kernels", [] {
    std::vector<std::string> names;
    for (const auto& k : mnist_engine::kernel_table()) names.emplace_back(k.name);
    return names;
  }, "Every kernel in this build, best first, whether or not this CPU can run it.");
  m.def("default_kernel",
        [](const std::string& precision) {
          return std::string(mnist_engine::select_kernel("", mnist_engine::parse_precision(precision)).name);
        },
        py::arg("precision") = "fp32", "The kernel a load without kernel= gets (honours MNIST_ENGINE_KERNEL).");
  m.def("measure_fma_peak_gflops",
        [](const std::string& kernel, int threads, double seconds) {
          const auto& k = mnist_engine::select_kernel(kernel);
          py::gil_scoped_release release;
          return mnist_engine::measure_fma_peak_gflops(k, threads, seconds);
        },
        py::arg("kernel") = "", py::arg("threads") = 1, py::arg("seconds") = 0.3,
        "Measured float32 FMA throughput (GFLOP/s) of a kernel's ISA: the benchmark's peak.");
  m.def("set_num_threads", &mnist_engine::set_default_threads, py::arg("threads"), "The default thread count of predict: 1..4x the CPUs, or 0 for the default (OMP_NUM_THREADS, else the CPUs this process may use).");
  m.def("get_num_threads", &mnist_engine::default_threads);
  m.def("max_threads", &mnist_engine::max_threads, "The most threads a call may ask for: 4x the CPUs.");
  m.def("_check_thread_pool", [](size_t items, int threads, int loops) {
    // Tests only: `loops` parallel loops of `items` on the pool; how many items ran other than
    // exactly once, or on a slot outside 0..threads-1 (0 when the pool keeps its promise).
    if (items > (size_t(1) << 20) || threads < 1 || threads > mnist_engine::max_threads() || loops < 0)
      throw std::invalid_argument("expected items <= 2^20, threads in 1..max_threads(), loops >= 0");
    py::gil_scoped_release release;
    std::vector<std::atomic<int>> runs(items);
    size_t wrong = 0;
    for (int loop = 0; loop < loops; ++loop) {
      for (auto& r : runs) r.store(0, std::memory_order_relaxed);
      std::atomic<size_t> bad_slots{0};
      mnist_engine::parallel_for(items, threads, [&](size_t i, int slot) {
        runs[i].fetch_add(1, std::memory_order_relaxed);
        if (slot < 0 || slot >= threads) bad_slots.fetch_add(1, std::memory_order_relaxed);
      });
      for (auto& r : runs) wrong += r.load(std::memory_order_relaxed) != 1;
      wrong += bad_slots.load();
    }
    return wrong;
  }, py::arg("items"), py::arg("threads"), py::arg("loops"));

  py::class_<Engine, std::shared_ptr<Engine>>(m, "Engine", R"doc(A loaded, verified model: immutable and thread-safe.

Make one with mnist_engine.load(path) (or Engine.from_bytes). predict(x) returns the model's
outputs as (N, output_width) float32, like Keras's model.predict; classify(x) the labels. Both
take uint8 pixels (scaled by input_scale) or float32 values, shaped (N, 784) or (N, 28, 28),
and release the GIL. The scikit-learn names work too: predict_proba, classes_, n_features_in_.

An Engine pickles as its file's bytes and its load options (kernel request, precision, threads),
and is parsed and verified again where it is unpickled, so it can be sent to multiprocessing,
concurrent.futures, joblib or Dask workers. copy.copy and copy.deepcopy return the same object:
nothing about an Engine can change.)doc")
      .def_static("from_bytes", &engine_from_buffer, py::arg("data"), py::arg("verify") = true,
                  py::arg("kernel") = "", py::arg("skip_zeros") = true, py::arg("precision") = py::none(),
                  py::arg("threads") = py::none(),
                  "An engine from the bytes of a .mnw file; see mnist_engine.load for the arguments.")
      .def("predict", &predict, py::arg("x"), py::arg("threads") = py::none(), py::arg("range_check") = "warn",
           "The model's outputs, (N, output_width) float32 (class probabilities for a softmax model).\n\n"
           "x: uint8 pixels (scaled by input_scale) or floats already in the model's input domain (x / 255 for "
           "the bundled model; see input_range), shaped (N, input_width) or (N, a, b) with a * b = input_width. "
           "threads: this call's threads (default: the engine's, else mnist_engine.get_num_threads()). "
           "Releases the GIL. range_check: float input far outside (or far inside) input_range gives an "
           "InputRangeWarning once per engine ('warn'), an InputRangeError every time ('raise'), or nothing "
           "('ignore'); the range is measured in the kernels' own pass over the rows.")
      .def("predict_proba", &predict_proba, py::arg("x"), py::arg("threads") = py::none(),
           py::arg("range_check") = "warn",
           "Class probabilities, (N, output_width) float32, whatever the model outputs (output_kind): predict's "
           "outputs unchanged for probabilities, exp of log-probabilities, softmax of logits (a sigmoid for one "
           "output). A model whose outputs are values (a regressor) raises ValueError. Takes the same x, threads "
           "and range_check as predict; scikit-learn's name.")
      .def("to_probabilities", &outputs_to_probabilities, py::arg("outputs"),
           "This model's outputs (from predict) as class probabilities: what predict_proba returns for the same "
           "rows.")
      .def_property_readonly("output_kind",
                             [](const Engine& e) { return std::string(mnist_engine::kOutputKindNames[uint32_t(e.output_kind())]); },
                             "What predict returns: 'probabilities', 'log_probabilities', 'logits' or 'values' "
                             "(the file's output_kind entry, or for a file without one what its last activation "
                             "gives: softmax and sigmoid probabilities, log_softmax log-probabilities, others "
                             "logits). predict_proba converts to probabilities.")
      .def_property_readonly("input_kind",
                             [](const Engine& e) { return std::string(e.pixel_input() ? "pixels" : "features"); },
                             "'pixels': uint8 images are scaled by input_scale, floats are taken as they are; "
                             "'features' (the file's input_kind: tabular data): float input only, uint8 is refused.")
      .def_property_readonly("input_mean",
                             [](const Engine& e) -> py::object {
                               return e.input_mean().empty() ? py::object(py::none()) : py::object(py::tuple(py::cast(e.input_mean())));
                             },
                             "The file's input_mean (one value, or one per channel), or None: what a uint8 "
                             "pixel becomes is (p * input_scale - input_mean) / input_std, a DataLoader's "
                             "Normalize(mean, std) after ToTensor.")
      .def_property_readonly("input_std",
                             [](const Engine& e) -> py::object {
                               return e.input_std().empty() ? py::object(py::none()) : py::object(py::tuple(py::cast(e.input_std())));
                             },
                             "The file's input_std, or None (see input_mean).")
      .def_property_readonly("output_kind_stated", &Engine::output_kind_stated,
                             "Whether the file states output_kind (else it was read off the last activation).")
      .def("classify", &classify, py::arg("x"), py::arg("threads") = py::none(), py::arg("range_check") = "warn",
           "One label per row, shape (N,): the argmax of predict, or for a one-output model output > threshold "
           "(0.5 after a sigmoid, else 0), mapped through `classes` when the file has them (int64, or str for "
           "string labels). Takes the same x, threads and range_check as predict.")
      .def_property_readonly("input_range", [](const Engine& e) {
        return py::make_tuple(e.input_range().lo, e.input_range().hi);
      }, "(lo, hi): the float inputs the model was checked on (its reference images in its input domain).")
      .def("input_range_problem", [](const Engine& e, float lo, float hi) -> py::object {
        const std::string problem = e.input_range_problem({std::min(lo, 0.0f), std::max(hi, 0.0f)});
        return problem.empty() ? py::object(py::none()) : py::object(py::str(problem));
      }, py::arg("lo"), py::arg("hi"),
         "The InputRangeWarning message for float inputs spanning lo..hi, or None when they fit this model.")
      .def_property_readonly("classes_", &sklearn_classes,
                             "scikit-learn's classes_: the labels classify returns, as an array (the file's "
                             "classes, else the output indices 0..output_width-1).")
      .def_property_readonly("n_features_in_", &Engine::input_width, "scikit-learn's name for input_width.")
      .def_property_readonly("threads", [](const Engine& e) { return e.threads() ? py::object(py::int_(e.threads())) : py::none(); },
                             "The threads predict uses when a call names none (load(threads=...)); None: the "
                             "process default, mnist_engine.get_num_threads().")
      .def(py::pickle(&engine_state, &engine_from_state))
      .def("__copy__", [](const std::shared_ptr<Engine>& self) { return self; })
      .def("__deepcopy__", [](const std::shared_ptr<Engine>& self, const py::object&) { return self; },
           py::arg("memo"))
      .def_property_readonly("classes", &classes_of,
                             "The file's class labels (what classify returns per output), or None: indices.")
      .def_property_readonly(
          "reject_class",
          [](const Engine& e) -> py::object {
            return e.reject_class() < 0 ? py::none() : py::cast(e.reject_class());
          },
          "The index of the output that means 'none of these' (the bundled reader's 'not a digit'), or None. "
          "mnist-engine predict and the server's page answer 'not sure' when it is the likeliest.")
      .def_property_readonly("input_width", &Engine::input_width)
      .def_property_readonly("output_width", &Engine::output_width)
      .def_property_readonly("input_scale", &Engine::input_scale)
      .def_property_readonly("kernel", &Engine::kernel_name)
      .def_property_readonly("conv_kernel", &Engine::conv_kernel_name,
                             "The kernels whose convolutions run the conv layers, in layer order, each once "
                             "('' for a model without): an fp32 kernel, or in an int8 or bf16 engine one of "
                             "its precision where this CPU has such a convolution (AMX hands narrow layers "
                             "without a 2x2 max pool to AVX-512 VNNI; a layer with none runs in fp32).")
      .def("kernel_for_rows", [](const Engine& e, long long rows) {
        if (rows < 0) throw py::value_error("rows must be >= 0, got " + std::to_string(rows));
        return e.kernel_for_rows(static_cast<size_t>(rows));
      }, py::arg("rows"),
           "The kernel that runs a tile of `rows` rows (a batch runs in tiles of 64 rows, the last one "
           "partial): `kernel`, or below an automatically chosen AMX kernel's minimum its small-batch "
           "partner.")
      .def_property_readonly("precision",
                             [](const Engine& e) { return std::string(mnist_engine::precision_name(e.precision())); })
      .def_property_readonly("reference_deviation", &Engine::reference_deviation,
                             "bf16/int8: the largest |output - expected| over the file's reference rows (what "
                             "reduced precision changed there); 0.0 for fp32 or when loaded with verify=False.")
      .def_property_readonly("verification_margin", &Engine::verification_margin)
      .def_property_readonly("layers", [](const Engine& e) {
        py::list out;
        for (const auto& l : e.layers())
          out.append(py::make_tuple(l.input_width, l.output_width,
                                    mnist_engine::activation_name(l.activation)));
        return py::tuple(out);
      })
      .def_property_readonly("layer_ops", [](const Engine& e) {
        py::list out;
        for (const auto& l : e.layers()) out.append(mnist_engine::op_name(l.op));
        return py::tuple(out);
      }, "Per layer, what it computes before its activation: 'dense', 'scale_shift', 'layer_norm', or "
         "(format version 3) 'conv2d', 'max_pool', 'avg_pool', 'global_avg_pool', 'global_max_pool'.")
      .def_property_readonly("metadata", [](const Engine& e) {
        py::dict d;
        for (const auto& [k, v] : e.metadata()) d[py::str(k)] = py::str(v);
        return d;
      })
      .def("__repr__", &describe);
}
