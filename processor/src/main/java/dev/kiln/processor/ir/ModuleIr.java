package dev.kiln.processor.ir;

import dev.kiln.dsl.Init;
import dev.kiln.processor.diag.Pos;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * One {@code @Module} record as the passes see it: its components, the config dims it uses, the signature of its
 * forward (and loss) method, and, once analysed, the IR of their bodies.
 */
public final class ModuleIr {
  /** A record component. */
  public sealed interface Component {
    String name();

    Pos pos();
  }

  /** A {@code @Param} tensor; {@code shape} names config dims only. */
  public record ParamTensor(String name, Shape shape, Init init, Pos pos) implements Component {}

  /**
   * A sub-module; {@code bindings} maps the sub-module's dim names to dims of this module ({@code @Bind}).
   * {@code bindingPos} says where each binding was written.
   */
  public record SubModule(String name, String type, Map<String, Dim> bindings, Map<String, Pos> bindingPos, Pos pos)
      implements Component {
    public SubModule {
      bindings = Map.copyOf(bindings);
      bindingPos = Map.copyOf(bindingPos);
    }
  }

  /** A {@code @Repeat} list of sub-modules of one type; its length is the config value {@code countKey}. */
  public record ModuleList(
      String name, String elementType, String countKey, Map<String, Dim> bindings, Map<String, Pos> bindingPos,
      Pos pos)
      implements Component {
    public ModuleList {
      bindings = Map.copyOf(bindings);
      bindingPos = Map.copyOf(bindingPos);
    }
  }

  /** A hyper-parameter read from {@code configKey}; {@code enumType} is the qualified enum name, for ENUM. */
  public record Hyper(String name, String configKey, HyperKind kind, String enumType, List<String> constants, Pos pos)
      implements Component {
    public Hyper {
      constants = List.copyOf(constants);
    }
  }

  public enum HyperKind {
    FLOAT,
    INT,
    BOOL,
    ENUM
  }

  /**
   * The shapes of a forward or loss method in this module's names: config dims and names bound by the inputs, and
   * {@code ...} as the rest named {@link #REST}.
   */
  public record Signature(String method, List<String> paramNames, List<Shape> params, Shape result) {
    public Signature {
      paramNames = List.copyOf(paramNames);
      params = List.copyOf(params);
    }

    /** Every dim name the signature mentions. */
    public Set<String> names() {
      Set<String> out = new LinkedHashSet<>();
      for (Shape s : params) {
        for (Dim d : s.dims()) {
          out.addAll(d.symbols());
        }
      }
      for (Dim d : result.dims()) {
        out.addAll(d.symbols());
      }
      return out;
    }
  }

  /** The rest name of a method's own {@code ...}. */
  public static final String REST = "...";

  private final String type;
  private final String simpleName;
  private final Map<String, Component> components = new LinkedHashMap<>();
  private final Set<String> dims = new LinkedHashSet<>();
  private Signature forward;
  private Signature loss;
  private final List<Graph> graphs = new ArrayList<>();

  public ModuleIr(String type, String simpleName) {
    this.type = type;
    this.simpleName = simpleName;
  }

  /** Qualified name of the record. */
  public String type() {
    return type;
  }

  public String simpleName() {
    return simpleName;
  }

  public Map<String, Component> components() {
    return components;
  }

  /** The config dims of this module: names in its parameter shapes, its sub-modules' dims, int hyper keys. */
  public Set<String> dims() {
    return dims;
  }

  public Signature forward() {
    return forward;
  }

  public void setForward(Signature s) {
    forward = s;
  }

  public Signature loss() {
    return loss;
  }

  public void setLoss(Signature s) {
    loss = s;
  }

  /** The analysed bodies (forward, then loss). */
  public List<Graph> graphs() {
    return graphs;
  }
}
