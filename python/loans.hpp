// Zero-copy payloads in Python: memoryviews over the bus's shared memory. A Loan hands out a
// writable one over its bytes; a kept payload (Subscriber::keep) becomes a read-only one. The
// object a memoryview exports from keeps the bytes valid, so no view ever outlives them.
#pragma once

#include <pybind11/pybind11.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <shmcast/shmcast.hpp>

namespace shmcast_python {

namespace py = pybind11;

// A loan and the buffers exported over its bytes and not yet released (counted with the GIL
// held), so publishing can refuse while a view could still write into published memory.
struct LoanBox {
  shmcast::Loan loan;
  Py_ssize_t exports = 0;
};

// shmcast.Loan: a loan as Python holds it. Used with the GIL held; publish() takes the C++ Loan
// out before it lets the GIL go.
class CoreLoan {
 public:
  explicit CoreLoan(shmcast::Loan loan);

  // The writable memoryview over the loan's bytes: the same one until shrink() changes them.
  py::object data();
  [[nodiscard]] std::size_t size() const;
  void shrink(std::size_t bytes);
  // The C++ Loan, to publish: releases every memoryview data() handed out first, and refuses
  // (BufferError) while a buffer over the bytes is still exported from one of them.
  shmcast::Loan take();
  // Gives the bytes back unpublished; nothing to do once spent.
  void release();
  [[nodiscard]] bool spent() const { return !box_->loan; }

 private:
  void check_unspent() const;

  std::shared_ptr<LoanBox> box_;
  std::vector<py::object> views_;  // the memoryviews data() handed out, the newest last
};

// A read-only memoryview over a kept payload, which it keeps (with its hold, for a loaned
// message) until the last view of it is released or collected.
py::object payload_view(shmcast::Payload payload);

// A read-only memoryview over a copy of `payload`.
py::object copied_view(const std::string& payload);

// A frame read in zero-copy mode: a publish's payload is kept in place (`held`) instead of
// copied, unless every hold of the connection is taken: then `refused` says so and the payload
// is copied into `message`.
struct Kept {
  shmcast::Message message;
  std::optional<shmcast::Payload> held;
  std::optional<shmcast::Error> refused;
};

// The next frame in zero-copy mode, waiting up to `wait` for it (listen() and keep()). Called
// without the GIL.
std::optional<Kept> keep_next(shmcast::Subscriber& s, std::chrono::nanoseconds wait);

// Adds Loan and SharedBytes (what the memoryviews export from) to the module.
void bind_loans(py::module_& m);

}  // namespace shmcast_python
