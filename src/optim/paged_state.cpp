#include "qtune/optim/paged_state.h"

#include "qtune/util/error.h"

#if QTUNE_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime.h>
#endif

namespace qtune::optim {

#if QTUNE_WITH_CUDA
namespace {

void check(cudaError_t err, const char* what, size_t bytes) {
  if (err != cudaSuccess) fail("paged optimizer state: {} ({} bytes): {}", what, bytes, cudaGetErrorString(err));
}

// CUDA 13 takes a cudaMemLocation (+ flags) where CUDA 12 took a device ordinal.
#if CUDART_VERSION >= 13000
cudaMemLocation gpu_location(int device) {
  cudaMemLocation loc{};
  loc.type = cudaMemLocationTypeDevice;
  loc.id = device;
  return loc;
}
cudaError_t prefetch_async(const void* p, size_t bytes, int device, cudaStream_t stream) {
  return cudaMemPrefetchAsync(p, bytes, gpu_location(device), /*flags=*/0, stream);
}
cudaError_t advise_accessed_by(const void* p, size_t bytes, int device) {
  return cudaMemAdvise(p, bytes, cudaMemAdviseSetAccessedBy, gpu_location(device));
}
#else
cudaError_t prefetch_async(const void* p, size_t bytes, int device, cudaStream_t stream) {
  return cudaMemPrefetchAsync(p, bytes, device, stream);
}
cudaError_t advise_accessed_by(const void* p, size_t bytes, int device) {
  return cudaMemAdvise(p, bytes, cudaMemAdviseSetAccessedBy, device);
}
#endif

}  // namespace
#endif

at::Tensor state_zeros(at::IntArrayRef shape, at::ScalarType dtype, at::Device device, bool paged) {
  const auto options = at::TensorOptions().dtype(dtype).device(device);
  if (!paged || !device.is_cuda()) return at::zeros(shape, options);
#if QTUNE_WITH_CUDA
  const size_t bytes = static_cast<size_t>(c10::multiply_integers(shape)) * c10::elementSize(dtype);
  if (bytes == 0) return at::zeros(shape, options);
  const c10::cuda::CUDAGuard guard(device);
  void* ptr = nullptr;
  check(cudaMallocManaged(&ptr, bytes, cudaMemAttachGlobal), "cudaMallocManaged", bytes);
  // AccessedBy keeps the pages mapped for the GPU wherever they are: pages the driver evicted to host under
  // memory pressure are read over the bus instead of faulting, until prefetch() brings them back in bulk.
  check(advise_accessed_by(ptr, bytes, device.index()), "cudaMemAdvise", bytes);
  auto t = at::from_blob(ptr, shape, [](void* p) { cudaFree(p); }, options);
  t.zero_();
  return t;
#else
  fail("paged optimizer state on {}: qtune was built without CUDA (QTUNE_CUDA=OFF)", device.str());
#endif
}

bool is_managed(const at::Tensor& t) {
#if QTUNE_WITH_CUDA
  if (!t.defined() || !t.is_cuda() || t.data_ptr() == nullptr) return false;
  cudaPointerAttributes attrs{};
  if (cudaPointerGetAttributes(&attrs, t.data_ptr()) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls do not report it
    return false;
  }
  return attrs.type == cudaMemoryTypeManaged;
#else
  return false;
#endif
}

void prefetch(const at::Tensor& state) {
#if QTUNE_WITH_CUDA
  if (!is_managed(state)) return;
  const size_t bytes = state.nbytes();
  const c10::cuda::CUDAGuard guard(state.device());
  check(prefetch_async(state.data_ptr(), bytes, state.device().index(), at::cuda::getCurrentCUDAStream().stream()),
        "cudaMemPrefetchAsync", bytes);
#else
  (void)state;
#endif
}

}  // namespace qtune::optim
