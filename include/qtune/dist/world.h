#pragma once
// Which rank of how many this process is, read from the environment its launcher set: qtune's own --nproc and
// torchrun (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), Open MPI (OMPI_COMM_WORLD_*),
// MPICH / Intel MPI (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID) and Slurm's srun (SLURM_PROCID, SLURM_NTASKS,
// SLURM_LOCALID). Torch-free: what the environment says, checked, nothing connected.
#include <functional>
#include <optional>
#include <string>

namespace qtune::dist {

struct World {
  int rank = 0, size = 1;
  int local_rank = 0, local_size = 1;  // among the ranks on this machine
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;  // torchrun's agent already serves the TCPStore at master_addr:master_port
  int attempt = 0;  // torchrun's restart count: the agent's store outlives a restart, so each attempt has its own keys
  std::string launcher = "none";  // none, torchrun (or qtune --nproc), mpi, slurm
  bool distributed() const { return size > 1; }
};

using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup process_environment();

// The world the environment describes (size 1 when no launcher set one); a malformed or contradictory variable is an
// error naming it.
World world_from_environment(const EnvLookup& env = process_environment());

// "node[01-03,07],gpu5" -> "node01": the host a Slurm job's rank 0 runs on (the first of SLURM_JOB_NODELIST).
std::string first_slurm_host(const std::string& nodelist);

}  // namespace qtune::dist
