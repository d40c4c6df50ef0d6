// shmcast._shmcast, the compiled core of the Python package: a Bus and a Subscriber that turn
// frames into the dictionaries redis-py builds and that wait and publish with the GIL released.
// The redis-py shaped classes around them (Redis, PubSub) are Python, in shmcast/client.py.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <shmcast/shmcast.hpp>

#include "loans.hpp"

namespace py = pybind11;

namespace {

using shmcast_python::CoreLoan;

// A blocking wait returns to Python this often, so Ctrl-C (a signal handler that raises) can
// interrupt it: Python runs signal handlers only in the main thread, with the GIL held.
constexpr std::chrono::milliseconds kSignalCheck{50};

const char* errc_name(shmcast::Errc code) {
  switch (code) {
    case shmcast::Errc::invalid_bus_name: return "invalid_bus_name";
    case shmcast::Errc::no_coordinator: return "no_coordinator";
    case shmcast::Errc::coordinator_running: return "coordinator_running";
    case shmcast::Errc::coordinator_gone: return "coordinator_gone";
    case shmcast::Errc::version_mismatch: return "version_mismatch";
    case shmcast::Errc::permission_denied: return "permission_denied";
    case shmcast::Errc::bad_segment: return "bad_segment";
    case shmcast::Errc::payload_too_large: return "payload_too_large";
    case shmcast::Errc::channel_too_long: return "channel_too_long";
    case shmcast::Errc::pattern_too_long: return "pattern_too_long";
    case shmcast::Errc::too_many_subscriptions: return "too_many_subscriptions";
    case shmcast::Errc::too_many_clients: return "too_many_clients";
    case shmcast::Errc::registry_full: return "registry_full";
    case shmcast::Errc::system: return "system";
    case shmcast::Errc::invalid_setting: return "invalid_setting";
    case shmcast::Errc::pool_full: return "pool_full";
    case shmcast::Errc::too_many_holds: return "too_many_holds";
  }
  return "system";
}

// The exception classes of shmcast/exceptions.py: the base class and a dict from Errc name to
// subclass. Held for the life of the process (never released, so no reference is dropped after
// the interpreter is gone).
PyObject* error_base = nullptr;
PyObject* error_classes = nullptr;

void set_error_classes(py::object base, py::dict classes) {
  Py_XDECREF(error_base);
  Py_XDECREF(error_classes);
  error_base = base.release().ptr();
  error_classes = classes.release().ptr();
}

void raise_error(const shmcast::Error& e) {
  PyObject* cls =
      error_classes ? PyDict_GetItemString(error_classes, errc_name(e.code())) : nullptr;
  if (cls == nullptr) cls = error_base ? error_base : PyExc_RuntimeError;
  PyErr_SetString(cls, e.what());
}

// Interned strings the message dictionaries share: their keys and the values of "type".
struct Words {
  PyObject* type = PyUnicode_InternFromString("type");
  PyObject* pattern = PyUnicode_InternFromString("pattern");
  PyObject* channel = PyUnicode_InternFromString("channel");
  PyObject* data = PyUnicode_InternFromString("data");
  PyObject* kinds[7] = {
      PyUnicode_InternFromString("message"),     PyUnicode_InternFromString("pmessage"),
      PyUnicode_InternFromString("subscribe"),   PyUnicode_InternFromString("psubscribe"),
      PyUnicode_InternFromString("unsubscribe"), PyUnicode_InternFromString("punsubscribe"),
      PyUnicode_InternFromString("gap")};
};

const Words& words() {
  static const Words* w = new Words();  // lives as long as the interpreter's interned strings
  return *w;
}

// How text goes to bytes and back, as redis-py's Encoder: `encoding` and `errors` as for
// str.encode; responses come back as str only with decode_responses.
struct Encoding {
  std::string encoding = "utf-8";
  std::string errors = "strict";
  bool decode = false;

  [[nodiscard]] bool utf8_strict() const {
    return (encoding == "utf-8" || encoding == "utf8") && errors == "strict";
  }
};

// A name or payload as bytes, the way redis-py encodes one: bytes-like objects as they are,
// str in the encoding, int and float by repr; anything else (bool and None included) is a
// TypeError. Holds the object that owns the bytes, so the view stays valid with the GIL released.
class Encoded {
 public:
  Encoded(py::handle value, const Encoding& enc) {
    PyObject* v = value.ptr();
    if (PyBytes_Check(v)) {
      view_ = {PyBytes_AS_STRING(v), static_cast<std::size_t>(PyBytes_GET_SIZE(v))};
      return;
    }
    if (PyUnicode_Check(v)) {
      if (enc.utf8_strict()) {
        Py_ssize_t size = 0;
        const char* data = PyUnicode_AsUTF8AndSize(v, &size);
        if (data == nullptr) throw py::error_already_set();
        view_ = {data, static_cast<std::size_t>(size)};
        return;
      }
      keep_ = py::reinterpret_steal<py::object>(
          PyUnicode_AsEncodedString(v, enc.encoding.c_str(), enc.errors.c_str()));
    } else if (PyByteArray_Check(v) || PyMemoryView_Check(v)) {
      keep_ = py::reinterpret_steal<py::object>(PyBytes_FromObject(v));
    } else if (!PyBool_Check(v) && (PyLong_Check(v) || PyFloat_Check(v))) {
      py::object text = py::reinterpret_steal<py::object>(PyObject_Repr(v));
      if (!text) throw py::error_already_set();
      keep_ = py::reinterpret_steal<py::object>(PyUnicode_AsASCIIString(text.ptr()));
    } else {
      throw py::type_error("Invalid input of type: '" + std::string(Py_TYPE(v)->tp_name) +
                           "'. Convert to a bytes, string, int or float first.");
    }
    if (!keep_) throw py::error_already_set();
    view_ = {PyBytes_AS_STRING(keep_.ptr()),
             static_cast<std::size_t>(PyBytes_GET_SIZE(keep_.ptr()))};
  }

  [[nodiscard]] std::string_view view() const { return view_; }

 private:
  py::object keep_;
  std::string_view view_;
};

// bytes, or str with decode_responses, of a name or payload from the bus.
PyObject* response(std::string_view bytes, const Encoding& enc) {
  const auto size = static_cast<Py_ssize_t>(bytes.size());
  if (!enc.decode) return PyBytes_FromStringAndSize(bytes.data(), size);
  if (enc.utf8_strict()) return PyUnicode_DecodeUTF8(bytes.data(), size, nullptr);
  return PyUnicode_Decode(bytes.data(), size, enc.encoding.c_str(), enc.errors.c_str());
}

py::object response_object(std::string_view bytes, const Encoding& enc) {
  py::object out = py::reinterpret_steal<py::object>(response(bytes, enc));
  if (!out) throw py::error_already_set();
  return out;
}

// The dictionary redis-py's PubSub.handle_message builds from one frame: pattern only on
// pmessage; data the subscription count on confirmations. A gap (shmcast's own kind) has no
// channel and the number of messages lost in data. `data`, if given, stands for the payload.
py::object message_dict(const shmcast::Message& m, const Encoding& enc,
                        py::handle data = py::handle()) {
  const Words& w = words();
  py::dict d;
  PyObject* raw = d.ptr();
  const bool publish = m.kind == shmcast::Kind::message || m.kind == shmcast::Kind::pmessage;
  PyDict_SetItem(raw, w.type, w.kinds[static_cast<int>(m.kind)]);
  if (m.kind == shmcast::Kind::pmessage) {
    PyDict_SetItem(raw, w.pattern, response_object(m.pattern, enc).ptr());
  } else {
    PyDict_SetItem(raw, w.pattern, Py_None);
  }
  if (m.kind == shmcast::Kind::gap || !m.has_name) {
    PyDict_SetItem(raw, w.channel, Py_None);
  } else {
    PyDict_SetItem(raw, w.channel, response_object(m.channel, enc).ptr());
  }
  if (publish && data) {
    PyDict_SetItem(raw, w.data, data.ptr());
  } else if (publish) {
    PyDict_SetItem(raw, w.data, response_object(m.payload, enc).ptr());
  } else {
    PyDict_SetItem(raw, w.data, py::int_(m.count).ptr());
  }
  return d;
}

std::chrono::milliseconds to_timeout(double seconds) {
  if (!(seconds >= 0)) throw py::value_error("request_timeout must be a number of seconds >= 0");
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000));
}

// Whose turn it is to use a subscriber. A call that changes subscriptions goes before a
// waiting next(), which takes one slice per turn: it waits for one slice at most, where a plain
// mutex could hand the turn back to the reader slice after slice.
class Turn {
 public:
  // Holds the turn while it lives; `reader`: a next() slice, which lets other calls go first.
  class Held {
   public:
    Held(Turn& turn, bool reader) : turn_(turn) { turn_.take(reader); }
    ~Held() { turn_.give(); }
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;

   private:
    Turn& turn_;
  };

  // Gives back a turn try_take() took, also when the call in it throws.
  class Given {
   public:
    explicit Given(Turn& turn) : turn_(turn) {}
    ~Given() { turn_.give(); }
    Given(const Given&) = delete;
    Given& operator=(const Given&) = delete;

   private:
    Turn& turn_;
  };

  // Takes the turn if it is free and no call waits for it.
  [[nodiscard]] bool try_take() {
    const std::lock_guard<std::mutex> lock(mutex_);
    if (busy_ || calls_waiting_ > 0) return false;
    busy_ = true;
    return true;
  }

  void give() {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      busy_ = false;
    }
    free_.notify_all();
  }

 private:
  void take(bool reader) {
    std::unique_lock<std::mutex> lock(mutex_);
    if (!reader) ++calls_waiting_;
    free_.wait(lock, [&] { return !busy_ && (!reader || calls_waiting_ == 0); });
    if (!reader) --calls_waiting_;
    busy_ = true;
  }

  std::mutex mutex_;
  std::condition_variable free_;
  bool busy_ = false;
  int calls_waiting_ = 0;
};

// A C++ Subscriber serves one thread at a time, while Python threads may share a PubSub (a
// run_in_thread worker waits in next() while the main thread subscribes or closes). Each call
// holds the subscriber through its own reference, so close() never frees it under a waiting
// call, and takes the subscriber's turn with the GIL released, so two calls never overlap.
class CoreSubscriber {
 public:
  CoreSubscriber(shmcast::Subscriber sub, Encoding enc)
      : client_(std::make_shared<Client>(std::move(sub))), enc_(std::move(enc)) {}

  std::size_t subscribe(const std::vector<std::string>& names, bool pattern) {
    return in_turn(
        [&](shmcast::Subscriber& s) { return pattern ? s.psubscribe(names) : s.subscribe(names); });
  }

  std::size_t unsubscribe(const std::vector<std::string>& names, bool pattern) {
    return in_turn([&](shmcast::Subscriber& s) {
      return pattern ? s.punsubscribe(names) : s.unsubscribe(names);
    });
  }

  // The next frame as a message dictionary, or None once `timeout` seconds passed (None: no
  // limit) or the subscriber is closed, as redis-py's get_message after close. With
  // `zero_copy`, a publish's data is a read-only memoryview over the payload kept in place (see
  // Kept).
  py::object next(std::optional<double> timeout, bool zero_copy) {
    std::shared_ptr<Client> c = client_;
    if (!c) return py::none();
    if (c->refused) {
      const shmcast::Message m = std::move(*c->refused);
      c->refused.reset();
      return message_dict(m, enc_,
                          zero_copy ? shmcast_python::copied_view(m.payload) : py::object());
    }
    if (!zero_copy) {
      const std::optional<shmcast::Message> m =
          wait_for(c, timeout, [](shmcast::Subscriber& s, std::chrono::nanoseconds wait) {
            return wait.count() == 0 ? s.try_receive() : s.receive(wait);
          });
      return m ? message_dict(*m, enc_) : py::none();
    }
    std::optional<shmcast_python::Kept> k = wait_for(c, timeout, &shmcast_python::keep_next);
    if (!k) return py::none();
    if (k->refused) {
      // The message is not lost: the next call returns it, copied.
      c->refused = std::move(k->message);
      raise_error(*k->refused);
      throw py::error_already_set();
    }
    if (!k->held) return message_dict(k->message, enc_);
    return message_dict(k->message, enc_, shmcast_python::payload_view(std::move(*k->held)));
  }

  [[nodiscard]] std::uint64_t dropped() {
    return in_turn([](shmcast::Subscriber& s) { return s.dropped(); });
  }
  [[nodiscard]] std::size_t subscription_count() {
    return in_turn([](shmcast::Subscriber& s) { return s.subscription_count(); });
  }

  // Drops this handle's reference: the subscriber goes (its subscriptions and ring with it) once
  // a call still waiting on it returns, which next() does within one slice.
  void close() {
    std::shared_ptr<Client> gone = std::move(client_);
    client_.reset();
    py::gil_scoped_release unlocked;
    gone.reset();
  }

  // The subscriber, for reads of what never changes after it is made (its descriptor).
  [[nodiscard]] std::shared_ptr<const shmcast::Subscriber> subscriber() const {
    std::shared_ptr<Client> c = client();
    return {c, &c->sub};
  }

 private:
  struct Client {
    explicit Client(shmcast::Subscriber s) : sub(std::move(s)) {}
    Turn turn;
    shmcast::Subscriber sub;
    // A message read in zero-copy mode when every hold was taken, to be returned next (a copy).
    // Used with the GIL held.
    std::optional<shmcast::Message> refused;
  };

  // What read(subscriber, wait) returns first, waiting up to `timeout` seconds (None: no limit);
  // nothing once the subscriber is closed. A frame already waiting is taken without releasing
  // the GIL. The turn is taken per slice, so a subscribe from another thread waits one slice at
  // most.
  template <class Read>
  auto wait_for(const std::shared_ptr<Client>& c, std::optional<double> timeout, Read read)
      -> std::invoke_result_t<Read, shmcast::Subscriber&, std::chrono::nanoseconds> {
    std::invoke_result_t<Read, shmcast::Subscriber&, std::chrono::nanoseconds> got;
    if (c->turn.try_take()) {
      const Turn::Given given(c->turn);
      got = read(c->sub, std::chrono::nanoseconds(0));
    } else {
      py::gil_scoped_release unlocked;
      const Turn::Held turn(c->turn, true);
      got = read(c->sub, std::chrono::nanoseconds(0));
    }
    const bool forever = !timeout.has_value();
    if (!got && (forever || *timeout > 0)) {
      const auto deadline = std::chrono::steady_clock::now() +
                            std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::duration<double>(forever ? 0.0 : *timeout));
      for (;;) {
        std::chrono::nanoseconds slice = kSignalCheck;
        if (!forever) {
          slice = std::min(slice, deadline - std::chrono::steady_clock::now());
          if (slice.count() <= 0) break;
        }
        {
          py::gil_scoped_release unlocked;
          const Turn::Held turn(c->turn, true);
          got = read(c->sub, slice);
        }
        if (got || client_ != c) break;
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      }
    }
    if (client_ != c) got.reset();
    return got;
  }

  [[nodiscard]] std::shared_ptr<Client> client() const {
    if (!client_) throw py::value_error("this subscriber is closed: make a new one with pubsub()");
    return client_;
  }

  template <class Call>
  auto in_turn(Call call) -> std::invoke_result_t<Call, shmcast::Subscriber&> {
    std::shared_ptr<Client> c = client();
    py::gil_scoped_release unlocked;
    const Turn::Held turn(c->turn, false);
    return call(c->sub);
  }

  std::shared_ptr<Client> client_;  // changed with the GIL held; null once closed
  Encoding enc_;
};

class CoreBus {
 public:
  CoreBus(std::optional<std::string> name, double request_timeout, Encoding enc)
      : name_(name ? *name : shmcast::default_bus_name()), enc_(std::move(enc)) {
    options_.request_timeout = to_timeout(request_timeout);
    shmcast::check_bus_name(name_);
    (void)bus();
  }

  std::size_t publish(const py::object& channel, const py::object& message) {
    // bytes and str first: the type lookup of a Loan would slow every small publish.
    PyObject* raw = message.ptr();
    if (!PyBytes_Check(raw) && !PyUnicode_Check(raw) && py::isinstance<CoreLoan>(message)) {
      return publish_loan(channel, message.cast<CoreLoan&>());
    }
    const Encoded c(channel, enc_);
    const Encoded d(message, enc_);
    shmcast::Bus b = bus();
    py::gil_scoped_release unlocked;
    return b.publish(c.view(), d.view());
  }

  std::size_t publish_loan(const py::object& channel, CoreLoan& loan) {
    const Encoded c(channel, enc_);
    shmcast::Bus b = bus();
    shmcast::Loan spent = loan.take();
    py::gil_scoped_release unlocked;
    return b.publish(c.view(), std::move(spent));
  }

  // A loan of `bytes`, waiting up to `wait` seconds (None: no limit) for room in the pool, in
  // slices so Ctrl-C interrupts a long wait.
  CoreLoan loan(std::size_t bytes, std::optional<double> wait) {
    if (wait && !(*wait >= 0)) throw py::value_error("wait must be a number of seconds >= 0");
    shmcast::Bus b = bus();
    const bool forever = !wait.has_value();
    const auto deadline = std::chrono::steady_clock::now() +
                          std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::duration<double>(forever ? 0.0 : *wait));
    for (;;) {
      std::chrono::nanoseconds slice = kSignalCheck;
      if (!forever)
        slice = std::clamp(deadline - std::chrono::steady_clock::now(), std::chrono::nanoseconds(0),
                           slice);
      std::optional<shmcast::Loan> got;
      {
        py::gil_scoped_release unlocked;
        try {
          got.emplace(b.loan(bytes, slice));
        } catch (const shmcast::Error& e) {
          if (e.code() != shmcast::Errc::pool_full || slice.count() == 0) throw;
        }
      }
      if (got) return CoreLoan(std::move(*got));
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
  }

  CoreSubscriber subscriber() {
    shmcast::Bus b = bus();
    std::optional<shmcast::Subscriber> s;
    {
      py::gil_scoped_release unlocked;
      s.emplace(b.subscriber());
    }
    return CoreSubscriber(std::move(*s), enc_);
  }

  py::list channels(std::optional<std::string> pattern) {
    shmcast::Bus b = bus();
    std::vector<std::string> names;
    {
      py::gil_scoped_release unlocked;
      names = pattern ? b.channels(*pattern) : b.channels();
    }
    py::list out;
    for (const auto& n : names) out.append(response_object(n, enc_));
    return out;
  }

  py::list numsub(const std::vector<std::string>& names) {
    shmcast::Bus b = bus();
    std::vector<std::pair<std::string, std::size_t>> counts;
    {
      py::gil_scoped_release unlocked;
      counts = b.numsub(names);
    }
    py::list out;
    for (const auto& [n, count] : counts)
      out.append(py::make_tuple(response_object(n, enc_), count));
    return out;
  }

  std::size_t numpat() {
    shmcast::Bus b = bus();
    py::gil_scoped_release unlocked;
    return b.numpat();
  }

  bool coordinator_alive() {
    shmcast::Bus b = bus();
    py::gil_scoped_release unlocked;
    return b.coordinator_alive();
  }

  void close() {
    std::optional<shmcast::Bus> gone = std::move(bus_);
    bus_.reset();
    py::gil_scoped_release unlocked;
    gone.reset();
  }

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] const Encoding& encoding() const { return enc_; }

 private:
  // Connects again after close(), as a redis-py client reconnects on its next command. Copies
  // share the connection, so a close() in another thread cannot pull it from under a publish.
  shmcast::Bus bus() {
    if (!bus_) {
      std::optional<shmcast::Bus> b;
      {
        py::gil_scoped_release unlocked;
        b.emplace(shmcast::Bus::connect(name_, options_));
      }
      if (!bus_) bus_ = std::move(b);
    }
    return *bus_;
  }

  std::string name_;
  shmcast::ConnectOptions options_;
  Encoding enc_;
  std::optional<shmcast::Bus> bus_;
};

template <class S>
void bind_fd(py::class_<CoreSubscriber>& cls) {
  if constexpr (requires(const S& s) {
                  { s.fd() } -> std::convertible_to<int>;
                }) {
    cls.def(
        "fileno",
        [](const CoreSubscriber& self) { return static_cast<const S&>(*self.subscriber()).fd(); },
        "A file descriptor that poll() reports readable when frames may be waiting; read with "
        "next(0) until it returns None before waiting on it again.");
  }
}

}  // namespace

PYBIND11_MODULE(_shmcast, m) {
  m.doc() = "The compiled core of shmcast; use the shmcast package (shmcast.Redis) instead.";
  shmcast_python::bind_loans(m);

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const shmcast::Error& e) {
      raise_error(e);
    }
  });

  std::vector<std::string> codes;
  for (int c = 0; c <= static_cast<int>(shmcast::Errc::too_many_holds); ++c) {
    codes.emplace_back(errc_name(static_cast<shmcast::Errc>(c)));
  }
  m.attr("errc_names") = py::tuple(py::cast(codes));
  m.def("set_error_classes", &set_error_classes, py::arg("base"), py::arg("classes"),
        "Which exception each Errc name raises (shmcast.exceptions calls this once).");
  m.def("default_bus_name", &shmcast::default_bus_name,
        "The bus a program uses when none is given: $SHMCAST_BUS, else 'default'.");

  py::class_<CoreSubscriber> sub(m, "Subscriber", "One client with its own ring.");
  sub.def(
         "subscribe",
         [](CoreSubscriber& self, const std::vector<std::string>& names) {
           return self.subscribe(names, false);
         },
         py::arg("channels"), "SUBSCRIBE: returns the channels + patterns held after it.")
      .def(
          "psubscribe",
          [](CoreSubscriber& self, const std::vector<std::string>& names) {
            return self.subscribe(names, true);
          },
          py::arg("patterns"), "PSUBSCRIBE: returns the channels + patterns held after it.")
      .def(
          "unsubscribe",
          [](CoreSubscriber& self, const std::vector<std::string>& names) {
            return self.unsubscribe(names, false);
          },
          py::arg("channels"), "UNSUBSCRIBE; no names: every channel.")
      .def(
          "punsubscribe",
          [](CoreSubscriber& self, const std::vector<std::string>& names) {
            return self.unsubscribe(names, true);
          },
          py::arg("patterns"), "PUNSUBSCRIBE; no names: every pattern.")
      .def("next", &CoreSubscriber::next, py::arg("timeout"), py::arg("zero_copy") = false,
           "The next frame as a message dict, or None after `timeout` seconds (None: no limit). "
           "With zero_copy, a message's data is a read-only memoryview over the payload, in the "
           "publisher's pool for a loaned message; TooManyHoldsError if every hold is taken, "
           "and the next call returns that message, copied.")
      .def("dropped", &CoreSubscriber::dropped,
           "Messages dropped so far because this subscriber's ring was full.")
      .def("subscription_count", &CoreSubscriber::subscription_count)
      .def("close", &CoreSubscriber::close, "Removes every subscription and frees the ring.");
  bind_fd<shmcast::Subscriber>(sub);

  py::class_<CoreBus>(m, "Bus", "A connection to one bus.")
      .def(py::init([](std::optional<std::string> name, double request_timeout, bool decode,
                       std::string encoding, std::string errors) {
             return CoreBus(std::move(name), request_timeout,
                            Encoding{std::move(encoding), std::move(errors), decode});
           }),
           py::arg("bus") = py::none(), py::arg("request_timeout") = 5.0,
           py::arg("decode_responses") = false, py::arg("encoding") = "utf-8",
           py::arg("encoding_errors") = "strict")
      .def("publish", &CoreBus::publish, py::arg("channel"), py::arg("message"),
           "PUBLISH: posts `message` on `channel` and returns the number of subscribers that "
           "received it (pattern subscribers counted once per matching pattern). Never blocks; a "
           "subscriber whose ring is full loses it and is not counted. `message` is bytes, str, "
           "int or float, or a Loan (see loan()), which is spent afterwards, delivered or not; "
           "its memoryview is released, and BufferError says if a view of it is still in use. "
           "Raises PayloadTooLargeError or ChannelTooLongError over a limit.")
      .def("loan", &CoreBus::loan, py::arg("nbytes"), py::arg("wait") = 0.0,
           "Writable shared memory for one message of `nbytes`, from this connection's payload "
           "pool (made on the first loan, --pool-bytes): fill loan.data, then publish(channel, "
           "loan); subscribers read the bytes in place. If the pool has no room, waits up to "
           "`wait` seconds (None: no limit) for subscribers to let go of theirs, then raises "
           "PoolFullError; PayloadTooLargeError if `nbytes` exceeds the whole pool or the bus "
           "has no pools.")
      .def("_subscriber", &CoreBus::subscriber)
      .def("_channels", &CoreBus::channels, py::arg("pattern"))
      .def("_numsub", &CoreBus::numsub, py::arg("channels"))
      .def("_numpat", &CoreBus::numpat)
      .def("coordinator_alive", &CoreBus::coordinator_alive,
           "True while the bus's coordinator (shmcastd) is alive.")
      .def("close", &CoreBus::close, "Lets the bus's client slot go; the next call connects again.")
      .def_property_readonly("bus", &CoreBus::name, "The bus's name.");
}
