#include "qtune/dist/world.h"

#include <cstdlib>

#include "qtune/util/error.h"

namespace qtune::dist {
namespace {

int integer(const EnvLookup& env, const std::string& name, int min) {
  const auto v = env(name);
  if (!v) fail("distributed launch: {} is not set (the launcher sets it beside the rank variables)", name);
  try {
    size_t used = 0;
    const long n = std::stol(*v, &used);
    if (used != v->size() || n < min || n > (1 << 24)) throw std::invalid_argument("range");
    return static_cast<int>(n);
  } catch (const std::exception&) {
    fail("distributed launch: {}='{}' is not an integer >= {}", name, *v, min);
  }
}

int integer_or(const EnvLookup& env, const std::string& name, int min, int fallback) {
  return env(name) ? integer(env, name, min) : fallback;
}

void set_master(World& w, const EnvLookup& env, const std::string& default_addr) {
  w.master_addr = env("MASTER_ADDR").value_or(default_addr);
  if (w.master_addr.empty()) fail("distributed launch: MASTER_ADDR is empty (the host of rank 0)");
  w.master_port = integer_or(env, "MASTER_PORT", 1, 29500);
  if (w.master_port > 65535) fail("distributed launch: MASTER_PORT={} is not a TCP port (1-65535)", w.master_port);
}

void check(const World& w, const std::string& rank_var, const std::string& size_var) {
  if (w.rank >= w.size) fail("distributed launch: {}={} but {}={} (ranks are 0 .. {})", rank_var, w.rank, size_var, w.size, w.size - 1);
  if (w.local_rank >= w.local_size)
    fail("distributed launch: local rank {} of {} ranks on this machine (from the {} variables)", w.local_rank,
         w.local_size, w.launcher);
}

}  // namespace

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    return v ? std::optional<std::string>(v) : std::nullopt;
  };
}

std::string first_slurm_host(const std::string& nodelist) {
  // The first entry up to a comma outside brackets, its first bracket range expanded to its first value.
  std::string entry;
  int depth = 0;
  for (char c : nodelist) {
    if (c == ',' && depth == 0) break;
    depth += c == '[' ? 1 : c == ']' ? -1 : 0;
    entry += c;
  }
  const auto open = entry.find('[');
  if (open == std::string::npos) return entry;
  const auto close = entry.find(']', open);
  if (close == std::string::npos) fail("SLURM_JOB_NODELIST='{}': unbalanced '['", nodelist);
  auto first = entry.substr(open + 1, close - open - 1);
  first = first.substr(0, first.find_first_of(",-"));
  return entry.substr(0, open) + first + entry.substr(close + 1);
}

World world_from_environment(const EnvLookup& env) {
  World w;
  if (env("RANK") || env("WORLD_SIZE")) {  // torchrun, torch.distributed.launch, qtune train --nproc
    w.launcher = env("QTUNE_LAUNCHED_BY").value_or("torchrun");
    w.size = integer(env, "WORLD_SIZE", 1);
    w.rank = integer(env, "RANK", 0);
    w.local_rank = integer_or(env, "LOCAL_RANK", 0, w.rank);
    w.local_size = integer_or(env, "LOCAL_WORLD_SIZE", 1, w.size);
    const auto agent = env("TORCHELASTIC_USE_AGENT_STORE").value_or("");
    w.agent_store = agent == "True" || agent == "true" || agent == "1";
    w.attempt = integer_or(env, "TORCHELASTIC_RESTART_COUNT", 0, 0);
    set_master(w, env, "127.0.0.1");
    check(w, "RANK", "WORLD_SIZE");
    return w;
  }
  if (env("OMPI_COMM_WORLD_SIZE")) {  // Open MPI's mpirun
    w.launcher = "mpi";
    w.size = integer(env, "OMPI_COMM_WORLD_SIZE", 1);
    w.rank = integer(env, "OMPI_COMM_WORLD_RANK", 0);
    w.local_rank = integer_or(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0, w.rank);
    w.local_size = integer_or(env, "OMPI_COMM_WORLD_LOCAL_SIZE", 1, w.size);
  } else if (env("PMI_SIZE")) {  // MPICH / Intel MPI (Hydra)
    w.launcher = "mpi";
    w.size = integer(env, "PMI_SIZE", 1);
    w.rank = integer(env, "PMI_RANK", 0);
    w.local_rank = integer_or(env, "MPI_LOCALRANKID", 0, w.rank);
    w.local_size = integer_or(env, "MPI_LOCALNRANKS", 1, w.size);
  } else if (env("SLURM_PROCID") && env("SLURM_STEP_NUM_TASKS")) {
    // srun's tasks only: an sbatch script's own shell has SLURM_PROCID=0 and SLURM_NTASKS=N too, but no step of
    // tasks, and a plain `qtune train` there is one process.
    w.launcher = "slurm";
    w.size = integer(env, "SLURM_STEP_NUM_TASKS", 1);
    w.rank = integer(env, "SLURM_PROCID", 0);
    w.local_rank = integer_or(env, "SLURM_LOCALID", 0, w.rank);
    const int nodes = integer_or(env, "SLURM_STEP_NUM_NODES", 1, integer_or(env, "SLURM_NNODES", 1, 1));
    w.local_size = nodes == 1 ? w.size : (w.size + nodes - 1) / nodes;  // an even split; only used to share cores
    if (w.local_rank >= w.local_size) w.local_size = w.local_rank + 1;
    const auto nodelist = env("SLURM_STEP_NODELIST") ? env("SLURM_STEP_NODELIST") : env("SLURM_JOB_NODELIST");
    set_master(w, env, nodes > 1 && nodelist ? first_slurm_host(*nodelist) : "127.0.0.1");
    check(w, "SLURM_PROCID", "SLURM_NTASKS");
    return w;
  } else {
    return w;
  }
  // MPI: rank 0's host must be named unless every rank runs on this machine.
  if (w.local_size < w.size && !env("MASTER_ADDR"))
    fail("distributed launch: {} ranks over several machines under mpirun: set MASTER_ADDR to rank 0's host (mpirun "
         "-x MASTER_ADDR=host -x MASTER_PORT=29500)",
         w.size);
  set_master(w, env, "127.0.0.1");
  check(w, "the MPI rank", "the MPI size");
  return w;
}

}  // namespace qtune::dist
