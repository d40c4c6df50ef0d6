#include "loans.hpp"

#include <utility>

namespace shmcast_python {

namespace {

// What every memoryview over shared memory exports from: either a loan's bytes (writable) or a
// kept payload (read-only). A plain C type, not a pybind11 class, because it must count the
// buffers it hands out and gets back.
struct SharedBytes {
  PyObject_HEAD std::shared_ptr<LoanBox>* loan;  // null for a payload
  shmcast::Payload* payload;                     // null for a loan
};

PyTypeObject* shared_bytes_type = nullptr;  // made once at import, kept for the process

constexpr const char* kSpent =
    "this loan was published or released: take a new one with loan() for the next message";

int shared_bytes_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  auto* s = reinterpret_cast<SharedBytes*>(self);
  if (s->loan != nullptr) {
    LoanBox& box = **s->loan;
    if (!box.loan) {
      view->obj = nullptr;
      PyErr_SetString(PyExc_ValueError, kSpent);
      return -1;
    }
    const auto bytes = box.loan.data();
    if (PyBuffer_FillInfo(view, self, bytes.data(), static_cast<Py_ssize_t>(bytes.size()), 0,
                          flags) != 0) {
      return -1;
    }
    ++box.exports;
    return 0;
  }
  if (s->payload == nullptr) {
    view->obj = nullptr;
    PyErr_SetString(PyExc_ValueError, "this SharedBytes holds nothing");
    return -1;
  }
  const auto bytes = s->payload->data();
  // Read-only: the bytes may be the publisher's pool, which every subscriber reads.
  return PyBuffer_FillInfo(view, self, const_cast<std::byte*>(bytes.data()),
                           static_cast<Py_ssize_t>(bytes.size()), 1, flags);
}

void shared_bytes_releasebuffer(PyObject* self, Py_buffer* /*view*/) {
  auto* s = reinterpret_cast<SharedBytes*>(self);
  if (s->loan != nullptr) --(*s->loan)->exports;
}

void shared_bytes_dealloc(PyObject* self) {
  auto* s = reinterpret_cast<SharedBytes*>(self);
  PyTypeObject* type = Py_TYPE(self);
  delete s->loan;
  delete s->payload;  // lets the hold go: any thread may, the GIL makes it one at a time
  type->tp_free(self);
  Py_DECREF(type);
}

PyObject* shared_bytes_loaned(PyObject* self, void* /*closure*/) {
  auto* s = reinterpret_cast<SharedBytes*>(self);
  return PyBool_FromLong(s->loan != nullptr || (s->payload != nullptr && s->payload->loaned()));
}

PyGetSetDef shared_bytes_getset[] = {
    {"loaned", shared_bytes_loaned, nullptr,
     "True if the bytes are a publisher's payload pool (a loan or a loaned message), False for "
     "a copy.",
     nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyType_Slot shared_bytes_slots[] = {
    {Py_bf_getbuffer, reinterpret_cast<void*>(&shared_bytes_getbuffer)},
    {Py_bf_releasebuffer, reinterpret_cast<void*>(&shared_bytes_releasebuffer)},
    {Py_tp_dealloc, reinterpret_cast<void*>(&shared_bytes_dealloc)},
    {Py_tp_getset, shared_bytes_getset},
    {Py_tp_doc,
     const_cast<char*>("What a memoryview over the bus's shared memory exports from (its .obj): it "
                       "keeps the bytes valid while any view of them lives.")},
    {0, nullptr}};

PyType_Spec shared_bytes_spec = {"shmcast._shmcast.SharedBytes", sizeof(SharedBytes), 0,
                                 Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION,
                                 shared_bytes_slots};

// A new SharedBytes that owns `loan` or `payload` (one of them), viewed by a new memoryview.
py::object shared_view(std::shared_ptr<LoanBox>* loan, shmcast::Payload* payload) {
  auto* s = reinterpret_cast<SharedBytes*>(PyType_GenericAlloc(shared_bytes_type, 0));
  if (s == nullptr) {
    delete loan;
    delete payload;
    throw py::error_already_set();
  }
  s->loan = loan;
  s->payload = payload;
  const py::object owner = py::reinterpret_steal<py::object>(reinterpret_cast<PyObject*>(s));
  py::object view = py::reinterpret_steal<py::object>(PyMemoryView_FromObject(owner.ptr()));
  if (!view) throw py::error_already_set();
  return view;
}

}  // namespace

CoreLoan::CoreLoan(shmcast::Loan loan) : box_(std::make_shared<LoanBox>()) {
  box_->loan = std::move(loan);
}

void CoreLoan::check_unspent() const {
  if (!box_->loan) throw py::value_error(kSpent);
}

py::object CoreLoan::data() {
  check_unspent();
  if (!views_.empty()) {
    // A released view (a publish that refused) has no length: it is replaced.
    const Py_ssize_t length = PyObject_Length(views_.back().ptr());
    if (length < 0) {
      PyErr_Clear();
    } else if (static_cast<std::size_t>(length) == box_->loan.size()) {
      return views_.back();
    }
  }
  views_.push_back(shared_view(new std::shared_ptr<LoanBox>(box_), nullptr));
  return views_.back();
}

std::size_t CoreLoan::size() const {
  check_unspent();
  return box_->loan.size();
}

void CoreLoan::shrink(std::size_t bytes) {
  check_unspent();
  if (bytes > box_->loan.size()) {
    throw py::value_error("shrink() cannot grow a loan: pass at most len(loan) bytes");
  }
  box_->loan.shrink(bytes);
}

shmcast::Loan CoreLoan::take() {
  check_unspent();
  // Views with buffers of their own exported cannot be released: the count below refuses then.
  for (const py::object& view : views_) {
    const py::object done =
        py::reinterpret_steal<py::object>(PyObject_CallMethod(view.ptr(), "release", nullptr));
    if (!done) {
      if (!PyErr_ExceptionMatches(PyExc_BufferError)) throw py::error_already_set();
      PyErr_Clear();
    }
  }
  if (box_->exports > 0) {
    throw py::buffer_error(
        "a view of this loan's bytes is still in use (a slice or an array made from loan.data): "
        "delete or release it first, so nothing writes into a published message");
  }
  views_.clear();
  return std::move(box_->loan);
}

void CoreLoan::release() {
  if (!spent()) (void)take();
}

py::object payload_view(shmcast::Payload payload) {
  return shared_view(nullptr, new shmcast::Payload(std::move(payload)));
}

py::object copied_view(const std::string& payload) {
  const py::bytes copy(payload);
  py::object view = py::reinterpret_steal<py::object>(PyMemoryView_FromObject(copy.ptr()));
  if (!view) throw py::error_already_set();
  return view;
}

std::optional<Kept> keep_next(shmcast::Subscriber& s, std::chrono::nanoseconds wait) {
  std::optional<Kept> out;
  s.listen(
      [&](const shmcast::MessageView& v) {
        Kept& k = out.emplace();
        k.message = shmcast::Message{
            v.kind, std::string(v.pattern), std::string(v.channel), {}, v.count, v.has_name};
        if (v.kind == shmcast::Kind::message || v.kind == shmcast::Kind::pmessage) {
          try {
            k.held.emplace(s.keep(v));
          } catch (const shmcast::Error& e) {
            if (e.code() != shmcast::Errc::too_many_holds) throw;
            k.message.payload = std::string(v.payload);
            k.refused.emplace(e);
          }
        }
        return false;
      },
      wait);
  return out;
}

void bind_loans(py::module_& m) {
  shared_bytes_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&shared_bytes_spec));
  if (shared_bytes_type == nullptr) throw py::error_already_set();
  m.attr("SharedBytes") = py::handle(reinterpret_cast<PyObject*>(shared_bytes_type));

  py::class_<CoreLoan>(
      m, "Loan",
      "Writable shared memory for one message (Redis.loan): fill loan.data, then "
      "publish(channel, loan). Every subscriber reads these very bytes, without a copy.")
      .def_property_readonly(
          "data", &CoreLoan::data,
          "The loan's bytes as a writable memoryview (the same one each time). publish() "
          "releases it; a slice or an array made from it must be gone by then (BufferError).")
      .def("__len__", &CoreLoan::size)
      .def("shrink", &CoreLoan::shrink, py::arg("nbytes"),
           "Publishes only the first `nbytes` (at most len(loan)).")
      .def("release", &CoreLoan::release,
           "Gives the bytes back to the pool unpublished (nothing to do once published).")
      .def_property_readonly("spent", &CoreLoan::spent,
                             "True once published or released: the loan can no longer be used.")
      .def("__enter__", [](py::object self) { return self; })
      .def(
          "__exit__", [](CoreLoan& self, const py::args& /*exc_info*/) { self.release(); },
          "Releases the loan if it was not published.");
}

}  // namespace shmcast_python
