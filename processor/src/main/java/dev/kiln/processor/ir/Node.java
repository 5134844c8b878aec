package dev.kiln.processor.ir;

import dev.kiln.processor.diag.Pos;
import java.util.List;

/** One operation of a {@link Block}. Control flow is structured: loops and conditionals own their blocks. */
public sealed interface Node {
  /** The values this node defines. */
  List<Value> outputs();

  /**
   * A primitive applied to values. {@code argPos} gives, per input, where the user wrote it (the call when the input
   * was made inside a composite); {@code specPos} is the spec or pattern literal. {@code composite} names the
   * composite op this node was expanded from ({@code rmsNorm}), or is null; {@code group} numbers the expansion so
   * a later pass can fuse it as one kernel.
   */
  record Prim(
      Primitive op,
      List<Value> inputs,
      Attr attr,
      Value out,
      Pos pos,
      List<Pos> argPos,
      Pos specPos,
      String composite,
      int group)
      implements Node {
    public Prim {
      inputs = List.copyOf(inputs);
      argPos = List.copyOf(argPos);
    }

    @Override
    public List<Value> outputs() {
      return List.of(out);
    }
  }

  /** Reads a {@code @Param} tensor of this module. */
  record ParamRead(String component, Value out, Pos pos) implements Node {
    @Override
    public List<Value> outputs() {
      return List.of(out);
    }
  }

  /**
   * Calls the forward method of a sub-module component, of an element of a {@code @Repeat} list (the loop element),
   * or this module's own forward ({@code component} null).
   */
  record Call(String component, String calleeType, String display, List<Value> args, Value out, Pos pos, List<Pos> argPos)
      implements Node {
    public Call {
      args = List.copyOf(args);
      argPos = List.copyOf(argPos);
    }

    @Override
    public List<Value> outputs() {
      return List.of(out);
    }
  }

  /**
   * A for-each over the {@code @Repeat} list {@code listComponent}. The body's parameters are the loop-carried
   * values (initially {@code init}); its results are their new values; {@code out} are the values after the loop.
   */
  record Loop(String listComponent, List<Value> init, Block body, List<Value> out, List<String> names, Pos pos)
      implements Node {
    public Loop {
      init = List.copyOf(init);
      out = List.copyOf(out);
      names = List.copyOf(names);
    }

    @Override
    public List<Value> outputs() {
      return out;
    }
  }

  /**
   * Backward of a {@link Call}: runs the callee's backward on the context the forward call saved, with the adjoint
   * {@code dOut} of its result; {@code dArgs} are the adjoints of its arguments (null where an argument is not
   * differentiable), and the callee's parameter gradients are added to the gradient of {@code call.component()}
   * (of every component, for a call of this module's own forward). {@code plus}, parallel to {@code dArgs}, holds
   * values the callee adds to an argument's gradient itself (null: none), where the callee's backward has that form
   * ({@code dArgs} are then the sums).
   */
  record CallGrad(Call call, Value dOut, List<Value> dArgs, List<Value> plus) implements Node {
    public CallGrad {
      dArgs = java.util.Collections.unmodifiableList(new java.util.ArrayList<>(dArgs));
      plus = java.util.Collections.unmodifiableList(new java.util.ArrayList<>(plus));
      if (plus.size() != dArgs.size()) {
        throw new IllegalArgumentException("plus and dArgs differ in length");
      }
    }

    public CallGrad(Call call, Value dOut, List<Value> dArgs) {
      this(call, dOut, dArgs, java.util.Collections.nCopies(dArgs.size(), null));
    }

    /** The values it reads: {@code dOut}, then the addends. */
    public List<Value> reads() {
      List<Value> out = new java.util.ArrayList<>();
      out.add(dOut);
      plus.stream().filter(java.util.Objects::nonNull).forEach(out::add);
      return out;
    }

    /** Whether the callee adds to any argument's gradient itself. */
    public boolean adds() {
      return plus.stream().anyMatch(java.util.Objects::nonNull);
    }

    @Override
    public List<Value> outputs() {
      return dArgs.stream().filter(java.util.Objects::nonNull).toList();
    }
  }

  /**
   * Backward of a {@link Loop}, iterating the list in reverse. The body's parameters are the adjoints of the carried
   * values after an iteration ({@code init}: of the loop's outputs); its results are the adjoints of the carried
   * values before it; {@code out} are the adjoints of the loop's initial values. Forward values from outside the
   * loop that the body uses ({@code externals}) get their adjoints summed over the iterations: they follow the carried
   * ones in {@code init} (zeros), the body's parameters and results, and {@code out}.
   */
  record LoopGrad(Loop loop, List<Value> externals, List<Value> init, Block body, List<Value> out) implements Node {
    public LoopGrad {
      externals = List.copyOf(externals);
      init = List.copyOf(init);
      out = List.copyOf(out);
    }

    @Override
    public List<Value> outputs() {
      return out;
    }
  }

  /** Adds {@code grad} to the gradient of the {@code @Param} component {@code component}. */
  record ParamGrad(String component, Value grad, ParamRead read) implements Node {
    @Override
    public List<Value> outputs() {
      return List.of();
    }
  }

  /** {@code cond ? then : otherwise}, decided at init time; both blocks yield values of the same shapes. */
  record Branch(Cond cond, Block then, Block otherwise, List<Value> out, Pos pos) implements Node {
    public Branch {
      out = List.copyOf(out);
    }

    @Override
    public List<Value> outputs() {
      return out;
    }
  }
}
