// The only file that sees c10d's Gloo process group. ProcessGroupGloo.hpp includes Gloo's own headers, which the torch
// wheel does not ship: Debian's libgloo-dev provides them (headers only; the symbols are the ones libtorch_cpu.so was
// linked with). What this file uses of Gloo are pointers to its types, so the two versions' layouts never meet; the
// DataParallel tests prove the pairing on every build.
#define USE_C10D_GLOO 1
#include "qtune/dist/communicator.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <thread>

#include "nccl_backend.h"
#include "qtune/util/error.h"

namespace qtune::dist {
namespace {

// c10d's errors carry a C++ backtrace after their first line: the message without it.
std::string message_of(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

}  // namespace

struct Communicator::Group {
  c10::intrusive_ptr<c10d::Store> store;  // prefixed: torchrun's agent keeps keys of its own in the same store
  c10::intrusive_ptr<c10d::Backend> backend;  // Gloo: CPU tensors (and CUDA ones without NCCL)
  c10::intrusive_ptr<c10d::Backend> nccl;     // CUDA tensors, made at the first one (every rank gets there together)
  bool nccl_tried = false;
};

Communicator::Communicator(World world, std::chrono::milliseconds timeout)
    : world_(std::move(world)), timeout_(timeout) {}
Communicator::~Communicator() = default;

std::shared_ptr<Communicator> Communicator::single() {
  return std::shared_ptr<Communicator>(new Communicator(World{}, std::chrono::milliseconds(0)));
}

std::shared_ptr<Communicator> Communicator::connect(const World& world, std::chrono::milliseconds timeout) {
  std::shared_ptr<Communicator> c(new Communicator(world, timeout));
  const auto where = fmt::format("{}:{}", world.master_addr, world.master_port);
  c10d::TCPStoreOptions so;
  so.port = static_cast<uint16_t>(world.master_port);
  so.isServer = world.rank == 0 && !world.agent_store;
  so.numWorkers = world.agent_store ? std::nullopt : std::optional<uint64_t>(world.size);
  so.waitWorkers = false;
  so.timeout = timeout;
  c->group_ = std::make_unique<Group>();
  try {
    auto tcp = c10::make_intrusive<c10d::TCPStore>(world.master_addr, so);
    c->group_->store = c10::make_intrusive<c10d::PrefixStore>(fmt::format("qtune/attempt_{}", world.attempt), tcp);
  } catch (const std::exception& e) {
    if (so.isServer)
      fail("rank 0 could not serve the rendezvous at {} ({}): is the port in use? Set MASTER_PORT to a free port",
           where, message_of(e));
    fail("rank {} could not reach rank 0's rendezvous at {} within {} s ({}): check MASTER_ADDR / MASTER_PORT and that "
         "rank 0 runs",
         world.rank, where, timeout.count() / 1000, message_of(e));
  }
  try {
    auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
    // Loopback when every rank is on this machine; else the address this host resolves to.
    opts->devices.push_back(world.local_size == world.size
                                ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                : c10d::ProcessGroupGloo::createDefaultDevice());
    opts->threads = 2;
    c->group_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(c->group_->store, world.rank, world.size, opts);
  } catch (const std::exception& e) {
    fail("rank {}: the Gloo process group of {} ranks did not form within {} s ({}): every rank must be started with "
         "the same WORLD_SIZE and MASTER_ADDR/MASTER_PORT",
         world.rank, world.size, timeout.count() / 1000, message_of(e));
  }
  return c;
}

void Communicator::fail_collective(const std::string& what, const std::exception& e) {
  // Every rank that sees the failure says so in the store; the ranks that have not said so within a few seconds are
  // the ones that died or hang. The store lives in rank 0's process: if it is gone too, rank 0 is the one.
  std::string culprits;
  try {
    const auto key = fmt::format("failed/{}", collectives_);
    group_->store->set(fmt::format("{}/{}", key, world_.rank), std::vector<uint8_t>{1});
    std::this_thread::sleep_for(std::chrono::seconds(3));
    std::vector<std::string> silent;
    for (int r = 0; r < world_.size; ++r)
      if (r != world_.rank && !group_->store->check({fmt::format("{}/{}", key, r)})) silent.push_back(std::to_string(r));
    culprits = silent.empty() ? std::string("(every rank reported it)")
                              : fmt::format("rank {} stopped answering", fmt::join(silent, ", rank "));
    // Rank 0 serves the store: it stays a little longer so that the others can still read it for their message.
    if (is_root()) std::this_thread::sleep_for(std::chrono::seconds(3));
  } catch (const std::exception&) {
    culprits = "rank 0 (which serves the rendezvous store) is gone";
  }
  fail("rank {} of {}: {} failed: {}; {}. Stopping (timeout {} s, train.dist_timeout_s); {}", world_.rank, world_.size,
       what, culprits, message_of(e), timeout_.count() / 1000, recovery_);
}

void Communicator::all_reduce_sum(std::vector<at::Tensor>& tensors, const std::string& what) {
  if (!group_) return;
  ++collectives_;
  try {
    std::vector<c10::intrusive_ptr<c10d::Work>> work;
    work.reserve(tensors.size());
    for (auto& t : tensors) {
      if (t.is_cuda() && !group_->nccl_tried) {
        group_->nccl_tried = true;
        group_->nccl = make_nccl_backend(c10::make_intrusive<c10d::PrefixStore>("nccl", group_->store), world_.rank,
                                         world_.size, timeout_);
      }
      auto& backend = t.is_cuda() && group_->nccl ? group_->nccl : group_->backend;
      std::vector<at::Tensor> one{t};
      work.push_back(backend->allreduce(one, c10d::AllreduceOptions{}));
    }
    for (size_t i = 0; i < work.size(); ++i) {
      try {
        work[i]->wait(timeout_);
      } catch (...) {
        // Gloo's threads still hold the later collectives: let them end (a broken pair fails them at once)
        // before the tensors they write go away.
        for (size_t j = i + 1; j < work.size(); ++j) try {
            work[j]->wait(timeout_);
          } catch (...) {
          }
        throw;
      }
    }
  } catch (const std::exception& e) {
    fail_collective(what, e);
  }
}

const char* Communicator::cuda_backend_name() { return QTUNE_WITH_NCCL ? "nccl" : "gloo"; }

std::string Communicator::share_from_root(const std::string& key, const std::string& value,
                                          std::chrono::milliseconds wait) {
  if (!group_) return value;
  const auto k = "shared/" + key;
  try {
    if (is_root()) {
      group_->store->set(k, std::vector<uint8_t>(value.begin(), value.end()));
      return value;
    }
    group_->store->wait({k}, wait);
    const auto v = group_->store->get(k);
    return std::string(v.begin(), v.end());
  } catch (const std::exception& e) {
    fail("rank {}: waiting for rank 0's {} failed after up to {} s ({}); did rank 0 stop?", world_.rank, key,
         wait.count() / 1000, message_of(e));
  }
}

}  // namespace qtune::dist
