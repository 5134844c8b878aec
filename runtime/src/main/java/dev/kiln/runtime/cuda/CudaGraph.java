package dev.kiln.runtime.cuda;

import jcuda.driver.CUgraph;
import jcuda.driver.CUgraphExec;
import jcuda.driver.CUstreamCaptureMode;
import jcuda.driver.JCudaDriver;

/**
 * A CUDA graph: the work one piece of code queues on a stream, recorded once ({@link #capture}) and replayed with one
 * launch ({@link #launch}), so a training step of thousands of small kernels costs one launch from the host.
 *
 * <p>Capture runs the code with the stream in relaxed capture mode: kernels, cuBLAS calls and memsets are recorded,
 * not run, and the addresses they use are baked in. The caller keeps every buffer the captured work touches alive
 * (and unused by anything else) for as long as it replays the graph, and must not synchronise or copy from the host
 * inside the captured code.
 */
public final class CudaGraph implements AutoCloseable {
  private final CudaDevice device;
  private final CUgraph graph;
  private final CUgraphExec exec = new CUgraphExec();
  private boolean closed;

  private CudaGraph(CudaDevice device, CUgraph graph) {
    this.device = device;
    this.graph = graph;
    CudaException.check(JCudaDriver.cuGraphInstantiate(exec, graph, 0), "cuGraphInstantiate");
  }

  /** Records what {@code work} queues on {@code stream} into a graph, ready to launch. */
  public static CudaGraph capture(CudaStream stream, Runnable work) {
    CudaDevice device = stream.device();
    device.makeCurrent();
    CudaException.check(JCudaDriver.cuStreamBeginCapture(stream.handle(),
        CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_RELAXED), "cuStreamBeginCapture");
    CUgraph graph = new CUgraph();
    try {
      work.run();
    } catch (RuntimeException | Error e) {
      // End the capture so the stream is usable again, and drop the partial graph.
      if (JCudaDriver.cuStreamEndCapture(stream.handle(), graph) == 0) {
        JCudaDriver.cuGraphDestroy(graph);
      }
      throw e;
    }
    CudaException.check(JCudaDriver.cuStreamEndCapture(stream.handle(), graph), "cuStreamEndCapture");
    return new CudaGraph(device, graph);
  }

  /** Queues one replay on {@code stream}. */
  public void launch(CudaStream stream) {
    if (closed) {
      throw new IllegalStateException("CUDA graph launched after close()");
    }
    device.makeCurrent();
    CudaException.check(JCudaDriver.cuGraphLaunch(exec, stream.handle()), "cuGraphLaunch");
  }

  @Override
  public void close() {
    if (!closed) {
      closed = true;
      device.makeCurrent();
      JCudaDriver.cuGraphExecDestroy(exec);
      JCudaDriver.cuGraphDestroy(graph);
    }
  }
}
