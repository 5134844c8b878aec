package dev.kiln.processor.analyze;

import com.sun.source.tree.AssignmentTree;
import com.sun.source.tree.BinaryTree;
import com.sun.source.tree.BlockTree;
import com.sun.source.tree.CaseTree;
import com.sun.source.tree.CompilationUnitTree;
import com.sun.source.tree.ConditionalExpressionTree;
import com.sun.source.tree.EnhancedForLoopTree;
import com.sun.source.tree.ExpressionStatementTree;
import com.sun.source.tree.ExpressionTree;
import com.sun.source.tree.IdentifierTree;
import com.sun.source.tree.IfTree;
import com.sun.source.tree.LiteralTree;
import com.sun.source.tree.MemberSelectTree;
import com.sun.source.tree.MethodInvocationTree;
import com.sun.source.tree.MethodTree;
import com.sun.source.tree.ParenthesizedTree;
import com.sun.source.tree.ReturnTree;
import com.sun.source.tree.StatementTree;
import com.sun.source.tree.SwitchTree;
import com.sun.source.tree.Tree;
import com.sun.source.tree.UnaryTree;
import com.sun.source.tree.VariableTree;
import com.sun.source.util.TreeScanner;
import dev.kiln.dsl.Mask;
import dev.kiln.dsl.Reduction;
import dev.kiln.dsl.shape.EinopsPattern;
import dev.kiln.dsl.shape.EinsumSpec;
import dev.kiln.dsl.shape.ShapeParser;
import dev.kiln.dsl.shape.ShapeSyntaxException;
import dev.kiln.processor.diag.Id;
import dev.kiln.processor.diag.Pos;
import dev.kiln.processor.diag.Report;
import dev.kiln.processor.ir.Attr;
import dev.kiln.processor.ir.Block;
import dev.kiln.processor.ir.Cond;
import dev.kiln.processor.ir.Dim;
import dev.kiln.processor.ir.Graph;
import dev.kiln.processor.ir.ModuleIr;
import dev.kiln.processor.ir.Node;
import dev.kiln.processor.ir.Primitive;
import dev.kiln.processor.ir.Scalar;
import dev.kiln.processor.ir.Shape;
import dev.kiln.processor.ir.Value;
import dev.kiln.processor.ir.Values;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import javax.lang.model.element.Element;
import javax.lang.model.element.ElementKind;
import javax.lang.model.element.ExecutableElement;
import javax.lang.model.element.TypeElement;
import javax.lang.model.element.VariableElement;

/**
 * Pass 1: turns the body of a {@code @Forward} or {@code @Loss} method into a {@link Graph}, reading javac's syntax
 * tree (bodies are not attributed while processors run, so names are resolved here: locals, record components, the
 * ops of {@code Ops} and {@code Tensor}, enum constants).
 *
 * <p>Control flow becomes structured IR. An {@code if} or {@code switch} on hyper-parameters becomes a
 * {@link Node.Branch} whose blocks each hold the rest of the enclosing block too, so that an early {@code return}
 * needs no join; a for-each over a {@code @Repeat} list becomes a {@link Node.Loop} carrying the locals its body
 * assigns. Anything else is {@code [UnsupportedConstruct]} on that tree, and the method is not analysed further.
 */
public final class BodyWalker {
  /** Stops the walk of one method after its first unsupported construct (reported), or silently for javac to report. */
  private static final class Abort extends RuntimeException {
    Abort() {
      super(null, null, false, false);
    }
  }

  private sealed interface Val {}

  private record TensorV(Value v) implements Val {}

  private record ScalarV(Scalar s) implements Val {}

  private record CondV(Cond c) implements Val {}

  private record EnumHyperV(ModuleIr.Hyper h) implements Val {}

  private record EnumConstV(String type, String constant) implements Val {}

  private record ModuleV(String component, String type, String display) implements Val {}

  private record ListV(ModuleIr.ModuleList list) implements Val {}

  private record StringV(String s, Tree tree) implements Val {}

  private record SizeV(String name, Dim dim) implements Val {}

  private record TopKV(Value values, Value indices) implements Val {}

  private record SelfV() implements Val {}

  /** The locals visible at a point. Branches copy it. */
  private static final class Env {
    final Map<String, Val> locals;

    Env(Map<String, Val> locals) {
      this.locals = locals;
    }

    Env copy() {
      return new Env(new LinkedHashMap<>(locals));
    }
  }

  /** What ends a statement list that runs off its end. */
  @FunctionalInterface
  private interface Terminator {
    void end(Env env, Block block, Tree where);
  }

  private final ModuleIr module;
  private final TypeElement type;
  private final CompilationUnitTree unit;
  private final Report report;
  private final Values values = new Values();
  private int groups;

  // The call being expanded: composite ops create several primitives that all point at it.
  private Pos sitePos;
  private Map<Value, Pos> siteArgs = Map.of();
  private Pos siteSpec;
  private String siteComposite;
  private int siteGroup;
  private Block current;

  public BodyWalker(ModuleIr module, TypeElement type, CompilationUnitTree unit, Report report) {
    this.module = module;
    this.type = type;
    this.unit = unit;
    this.report = report;
  }

  /** The graph of one method, or null when its body has an unsupported construct (reported). */
  public Graph walk(ExecutableElement method, MethodTree tree, ModuleIr.Signature sig, Graph.Kind kind) {
    List<Graph.Input> inputs = new ArrayList<>();
    Env env = new Env(new LinkedHashMap<>());
    List<Value> params = new ArrayList<>();
    for (int i = 0; i < sig.params().size(); i++) {
      String name = sig.paramNames().get(i);
      Value v = values.make(name, Value.Elem.FLOAT);
      params.add(v);
      env.locals.put(name, new TensorV(v));
      inputs.add(new Graph.Input(name, v, sig.params().get(i), new Pos.AtTree(tree.getParameters().get(i), unit)));
    }
    Block body = new Block(params);
    try {
      statements(tree.getBody().getStatements(), 0, env, body, (e, b, where) -> silent());
    } catch (Abort a) {
      return null;
    }
    Pos resultPos = new Pos.AtTree(tree, unit);
    return new Graph(sig.method(), kind, inputs, sig.result(), resultPos, body, values);
  }

  // ---- statements ---------------------------------------------------------------------------------------------

  private void statements(List<? extends StatementTree> list, int i, Env env, Block block, Terminator term) {
    for (; i < list.size(); i++) {
      StatementTree s = list.get(i);
      List<? extends StatementTree> rest = list.subList(i + 1, list.size());
      switch (s) {
        case VariableTree v -> {
          if (v.getInitializer() == null) {
            unsupported(v, "a local without an initialiser; declare it where you compute it");
          }
          env.locals.put(v.getName().toString(), expr(v.getInitializer(), env, block));
        }
        case ExpressionStatementTree es when es.getExpression() instanceof AssignmentTree a -> {
          if (!(a.getVariable() instanceof IdentifierTree id) || !env.locals.containsKey(id.getName().toString())) {
            unsupported(a.getVariable(), "assignment to something other than a local variable");
            return;
          }
          env.locals.put(id.getName().toString(), expr(a.getExpression(), env, block));
        }
        case ReturnTree r -> {
          if (r.getExpression() == null) {
            silent();
          }
          Value v = tensor(r.getExpression(), env, block);
          block.yield(List.of(v), List.of(pos(r.getExpression())), Block.Exit.RETURN);
          return;
        }
        case BlockTree b -> {
          statements(concat(b.getStatements(), rest), 0, env, block, term);
          return;
        }
        case IfTree ifs -> {
          Cond c = cond(ifs.getCondition(), env);
          List<StatementTree> thenList = concat(List.of(ifs.getThenStatement()), rest);
          List<StatementTree> elseList =
              ifs.getElseStatement() == null ? new ArrayList<>(rest) : concat(List.of(ifs.getElseStatement()), rest);
          branch(c, thenList, elseList, env, block, term, ifs);
          return;
        }
        case SwitchTree sw -> {
          switchStatement(sw, rest, env, block, term);
          return;
        }
        case EnhancedForLoopTree loop -> loop(loop, env, block);
        case com.sun.source.tree.EmptyStatementTree e -> {}
        case ExpressionStatementTree es ->
            unsupported(es, "an expression whose value is not used; assign it to a local or return it");
        default -> unsupported(s, describe(s) + " in a forward body");
      }
    }
    term.end(env, block, list.isEmpty() ? null : list.get(list.size() - 1));
  }

  private void branch(Cond c, List<? extends StatementTree> thenList, List<? extends StatementTree> elseList, Env env,
      Block block, Terminator term, Tree where) {
    Block thenB = new Block(List.of());
    Block elseB = new Block(List.of());
    statements(thenList, 0, env.copy(), thenB, term);
    statements(elseList, 0, env.copy(), elseB, term);
    List<Value> out = new ArrayList<>();
    for (Value r : thenB.results()) {
      out.add(values.make(r.label(), r.elem()));
    }
    block.add(new Node.Branch(c, thenB, elseB, out, pos(where)));
    // Each result was written inside the branch: a check of the enclosing block's results (a loop's carried shapes)
    // points at the branch.
    block.yield(out, java.util.Collections.nCopies(out.size(), pos(where)), Block.Exit.BRANCH);
  }

  private void switchStatement(SwitchTree sw, List<? extends StatementTree> rest, Env env, Block block,
      Terminator term) {
    Val sel = expr(sw.getExpression(), env, block);
    if (!(sel instanceof EnumHyperV h)) {
      unsupported(sw.getExpression(), "a switch on something other than an enum hyper-parameter");
      return;
    }
    List<Cond> conds = new ArrayList<>();
    List<List<StatementTree>> bodies = new ArrayList<>();
    List<StatementTree> fallback = new ArrayList<>(rest);
    for (CaseTree c : sw.getCases()) {
      if (c.getCaseKind() != CaseTree.CaseKind.RULE) {
        unsupported(c, "a 'case X:' label; write 'case X ->' so no case falls through");
      }
      List<StatementTree> body = concat(List.of(caseBody(c)), rest);
      if (c.getExpressions().isEmpty()) {
        fallback = body;
        continue;
      }
      Cond any = null;
      for (ExpressionTree e : c.getExpressions()) {
        String constant = e instanceof IdentifierTree id ? id.getName().toString()
            : e instanceof MemberSelectTree ms ? ms.getIdentifier().toString() : null;
        if (constant == null || !h.h().constants().contains(constant)) {
          unsupported(e, "a case label that is not a constant of " + h.h().enumType());
        }
        Cond is = new Cond.Is(h.h().name(), h.h().configKey(), constant);
        any = any == null ? is : new Cond.Or(any, is);
      }
      conds.add(any);
      bodies.add(body);
    }
    chain(conds, bodies, 0, fallback, env, block, term, sw);
  }

  private void chain(List<Cond> conds, List<List<StatementTree>> bodies, int k, List<StatementTree> fallback, Env env,
      Block block, Terminator term, Tree where) {
    if (k == conds.size()) {
      statements(fallback, 0, env, block, term);
      return;
    }
    Block thenB = new Block(List.of());
    Block elseB = new Block(List.of());
    statements(bodies.get(k), 0, env.copy(), thenB, term);
    chain(conds, bodies, k + 1, fallback, env.copy(), elseB, term, where);
    List<Value> out = new ArrayList<>();
    for (Value r : thenB.results()) {
      out.add(values.make(r.label(), r.elem()));
    }
    block.add(new Node.Branch(conds.get(k), thenB, elseB, out, pos(where)));
    block.yield(out, java.util.Collections.nCopies(out.size(), pos(where)), Block.Exit.BRANCH);
  }

  private StatementTree caseBody(CaseTree c) {
    Tree b = c.getBody();
    if (b instanceof StatementTree s) {
      return s;
    }
    unsupported(c, "a case body that is a bare expression");
    return null;
  }

  private void loop(EnhancedForLoopTree loop, Env env, Block block) {
    Val over = expr(loop.getExpression(), env, block);
    if (!(over instanceof ListV list)) {
      unsupported(loop.getExpression(), "a for-each over something other than a @Repeat list of modules");
      return;
    }
    // The locals the body assigns and that live outside it are carried from one iteration to the next.
    Set<String> assigned = new LinkedHashSet<>();
    new TreeScanner<Void, Void>() {
      @Override
      public Void visitAssignment(AssignmentTree a, Void unused) {
        if (a.getVariable() instanceof IdentifierTree id) {
          assigned.add(id.getName().toString());
        }
        return super.visitAssignment(a, unused);
      }
    }.scan(loop.getStatement(), null);
    List<String> carried = new ArrayList<>();
    List<Value> init = new ArrayList<>();
    for (String n : assigned) {
      if (env.locals.get(n) instanceof TensorV t) {
        carried.add(n);
        init.add(t.v());
      }
    }
    List<Value> params = new ArrayList<>();
    Env bodyEnv = env.copy();
    for (int i = 0; i < carried.size(); i++) {
      Value p = values.make(carried.get(i), Value.Elem.FLOAT);
      params.add(p);
      bodyEnv.locals.put(carried.get(i), new TensorV(p));
    }
    String elemName = loop.getVariable().getName().toString();
    bodyEnv.locals.put(elemName, new ModuleV(list.list().name(), list.list().elementType(), elemName));
    Block body = new Block(params);
    Terminator carry = (e, b, where) -> {
      List<Value> res = new ArrayList<>();
      for (String n : carried) {
        res.add(((TensorV) e.locals.get(n)).v());
      }
      List<Pos> rp = new ArrayList<>();
      for (int i = 0; i < carried.size(); i++) {
        rp.add(pos(where == null ? loop : where));
      }
      b.yield(res, rp, Block.Exit.CARRY);
    };
    List<StatementTree> stmts = loop.getStatement() instanceof BlockTree bt ? new ArrayList<>(bt.getStatements())
        : List.of(loop.getStatement());
    new TreeScanner<Void, Void>() {
      @Override
      public Void visitReturn(ReturnTree r, Void unused) {
        unsupported(r, "a return inside a loop over modules; assign the value and return after the loop");
        return null;
      }
    }.scan(loop.getStatement(), null);
    statements(stmts, 0, bodyEnv, body, carry);
    List<Value> out = new ArrayList<>();
    for (String n : carried) {
      Value v = values.make(n, Value.Elem.FLOAT);
      out.add(v);
      env.locals.put(n, new TensorV(v));
    }
    block.add(new Node.Loop(list.list().name(), init, body, out, carried, pos(loop)));
  }

  // ---- conditions ---------------------------------------------------------------------------------------------

  private Cond cond(ExpressionTree t, Env env) {
    switch (t) {
      case ParenthesizedTree p -> {
        return cond(p.getExpression(), env);
      }
      case LiteralTree l when l.getValue() instanceof Boolean b -> {
        return new Cond.Const(b);
      }
      case UnaryTree u when u.getKind() == Tree.Kind.LOGICAL_COMPLEMENT -> {
        return new Cond.Not(cond(u.getExpression(), env));
      }
      case BinaryTree b when b.getKind() == Tree.Kind.CONDITIONAL_AND -> {
        return new Cond.And(cond(b.getLeftOperand(), env), cond(b.getRightOperand(), env));
      }
      case BinaryTree b when b.getKind() == Tree.Kind.CONDITIONAL_OR -> {
        return new Cond.Or(cond(b.getLeftOperand(), env), cond(b.getRightOperand(), env));
      }
      case BinaryTree b when comparison(b.getKind()) != null -> {
        Val l = expr(b.getLeftOperand(), env, null);
        Val r = expr(b.getRightOperand(), env, null);
        String op = comparison(b.getKind());
        if ((op.equals("==") || op.equals("!=")) && (l instanceof EnumHyperV || r instanceof EnumHyperV)) {
          EnumHyperV h = l instanceof EnumHyperV x ? x : (EnumHyperV) r;
          Val other = l instanceof EnumHyperV ? r : l;
          if (other instanceof EnumConstV c && h.h().constants().contains(c.constant())) {
            Cond is = new Cond.Is(h.h().name(), h.h().configKey(), c.constant());
            return op.equals("==") ? is : new Cond.Not(is);
          }
          unsupported(t, "a comparison of an enum hyper-parameter with something other than one of its constants");
        }
        if (l instanceof ScalarV a && r instanceof ScalarV c) {
          return new Cond.Compare(op, a.s(), c.s());
        }
        unsupported(t, "a condition on something other than hyper-parameters");
        return null;
      }
      default -> {
        Val v = expr(t, env, null);
        if (v instanceof CondV c) {
          return c.c();
        }
        unsupported(t, "a condition on something other than hyper-parameters (a branch must be decided by the"
            + " config, not by tensor values)");
        return null;
      }
    }
  }

  private static String comparison(Tree.Kind k) {
    return switch (k) {
      case EQUAL_TO -> "==";
      case NOT_EQUAL_TO -> "!=";
      case LESS_THAN -> "<";
      case LESS_THAN_EQUAL -> "<=";
      case GREATER_THAN -> ">";
      case GREATER_THAN_EQUAL -> ">=";
      default -> null;
    };
  }

  // ---- expressions --------------------------------------------------------------------------------------------

  private Value tensor(ExpressionTree t, Env env, Block block) {
    Val v = expr(t, env, block);
    return toTensor(v, t, block);
  }

  private Value toTensor(Val v, ExpressionTree t, Block block) {
    if (v instanceof TensorV tv) {
      return tv.v();
    }
    if (v instanceof ScalarV s) {
      return atSite(pos(t), Map.of(), null, null, block, () -> builder(block).constant(s.s()));
    }
    silent();
    return null;
  }

  /** Evaluates an expression; {@code block} is null where no nodes may be added (conditions). */
  private Val expr(ExpressionTree t, Env env, Block block) {
    switch (t) {
      case ParenthesizedTree p -> {
        return expr(p.getExpression(), env, block);
      }
      case IdentifierTree id -> {
        String n = id.getName().toString();
        if (n.equals("this")) {
          return new SelfV();
        }
        Val local = env.locals.get(n);
        if (local != null) {
          return local;
        }
        return component(n, t, block);
      }
      case MemberSelectTree ms -> {
        if (ms.getExpression() instanceof IdentifierTree q) {
          String qn = q.getName().toString();
          String field = ms.getIdentifier().toString();
          if (qn.equals("this")) {
            return component(field, t, block);
          }
          if (!env.locals.containsKey(qn) && !module.components().containsKey(qn)) {
            Val c = enumConstant(qn, field);
            if (c != null) {
              return c;
            }
          }
        }
        unsupported(t, "'" + t + "': field access other than this.<component> or an enum constant");
        return null;
      }
      case LiteralTree l -> {
        Object v = l.getValue();
        if (v instanceof Number num) {
          return new ScalarV(new Scalar.Lit(num.doubleValue()));
        }
        if (v instanceof String s) {
          return new StringV(s, l);
        }
        if (v instanceof Boolean b) {
          return new CondV(new Cond.Const(b));
        }
        unsupported(t, "a " + t.getKind().toString().toLowerCase().replace('_', ' '));
        return null;
      }
      case UnaryTree u when u.getKind() == Tree.Kind.UNARY_MINUS -> {
        Val x = expr(u.getExpression(), env, block);
        if (x instanceof ScalarV s) {
          return new ScalarV(new Scalar.Op("-", new Scalar.Lit(0), s.s()));
        }
        unsupported(t, "unary minus on a tensor; write x.neg()");
        return null;
      }
      case BinaryTree b when arith(b.getKind()) != null -> {
        Val l = expr(b.getLeftOperand(), env, block);
        Val r = expr(b.getRightOperand(), env, block);
        if (l instanceof ScalarV x && r instanceof ScalarV y) {
          return new ScalarV(new Scalar.Op(arith(b.getKind()), x.s(), y.s()));
        }
        if (l instanceof StringV x && r instanceof StringV y && b.getKind() == Tree.Kind.PLUS) {
          return new StringV(x.s() + y.s(), b);
        }
        unsupported(t, "an arithmetic operator on tensors; use x.add(y), x.sub(y), x.mul(y), x.div(y)");
        return null;
      }
      case ConditionalExpressionTree c -> {
        if (block == null) {
          unsupported(t, "a conditional expression inside a condition");
        }
        return conditional(c, env, block);
      }
      case MethodInvocationTree m -> {
        if (block == null) {
          unsupported(t, "a method call in a condition; conditions test hyper-parameters only");
        }
        return call(m, env, block);
      }
      default -> {
        unsupported(t, describe(t) + " in a forward body");
        return null;
      }
    }
  }

  private static String arith(Tree.Kind k) {
    return switch (k) {
      case PLUS -> "+";
      case MINUS -> "-";
      case MULTIPLY -> "*";
      case DIVIDE -> "/";
      default -> null;
    };
  }

  private Val conditional(ConditionalExpressionTree c, Env env, Block block) {
    Cond cond = cond(c.getCondition(), env);
    Block thenB = new Block(List.of());
    Block elseB = new Block(List.of());
    Value a = tensor(c.getTrueExpression(), env, thenB);
    thenB.yield(List.of(a), List.of(pos(c.getTrueExpression())), Block.Exit.VALUE);
    Value b = tensor(c.getFalseExpression(), env, elseB);
    elseB.yield(List.of(b), List.of(pos(c.getFalseExpression())), Block.Exit.VALUE);
    Value out = values.make(label(c), Value.Elem.FLOAT);
    block.add(new Node.Branch(cond, thenB, elseB, List.of(out), pos(c)));
    return new TensorV(out);
  }

  private Val component(String n, Tree t, Block block) {
    ModuleIr.Component c = module.components().get(n);
    switch (c) {
      case null -> {
        Val k = constant(n, t);
        if (k != null) {
          return k;
        }
        unsupported(t, "'" + n + "' is not a local, a parameter or a component of " + module.simpleName());
        return null;
      }
      case ModuleIr.ParamTensor p -> {
        if (block == null) {
          unsupported(t, "a tensor in a condition; conditions test hyper-parameters only");
        }
        Value v = values.make(n, Value.Elem.FLOAT);
        block.add(new Node.ParamRead(n, v, pos(t)));
        return new TensorV(v);
      }
      case ModuleIr.SubModule s -> {
        return new ModuleV(n, s.type(), n);
      }
      case ModuleIr.ModuleList l -> {
        return new ListV(l);
      }
      case ModuleIr.Hyper h -> {
        return switch (h.kind()) {
          case FLOAT, INT -> new ScalarV(new Scalar.Hyper(h.name(), h.configKey()));
          case BOOL -> new CondV(new Cond.Flag(h.name(), h.configKey()));
          case ENUM -> new EnumHyperV(h);
        };
      }
    }
  }

  /** A {@code static final} constant of the module record (a spec string kept in one place). */
  private Val constant(String n, Tree t) {
    for (Element e : type.getEnclosedElements()) {
      if (e.getKind() == ElementKind.FIELD && e.getSimpleName().contentEquals(n)
          && ((VariableElement) e).getConstantValue() != null) {
        Object v = ((VariableElement) e).getConstantValue();
        if (v instanceof String s) {
          return new StringV(s, t);
        }
        if (v instanceof Number num) {
          return new ScalarV(new Scalar.Lit(num.doubleValue()));
        }
      }
    }
    return null;
  }

  private Val enumConstant(String typeName, String constant) {
    for (Enum<?> e : typeName.equals("Mask") ? Mask.values() : typeName.equals("Reduction") ? Reduction.values()
        : new Enum<?>[0]) {
      if (e.name().equals(constant)) {
        return new EnumConstV(typeName, constant);
      }
    }
    for (ModuleIr.Component c : module.components().values()) {
      if (c instanceof ModuleIr.Hyper h && h.enumType() != null
          && (h.enumType().equals(typeName) || h.enumType().endsWith("." + typeName))
          && h.constants().contains(constant)) {
        return new EnumConstV(typeName, constant);
      }
    }
    return null;
  }

  // ---- calls --------------------------------------------------------------------------------------------------

  private Val call(MethodInvocationTree m, Env env, Block block) {
    ExpressionTree sel = m.getMethodSelect();
    String name;
    Val receiver = null;
    if (sel instanceof IdentifierTree id) {
      name = id.getName().toString();
    } else if (sel instanceof MemberSelectTree ms) {
      name = ms.getIdentifier().toString();
      boolean opsQualifier = ms.getExpression() instanceof IdentifierTree q && q.getName().contentEquals("Ops")
          && !env.locals.containsKey("Ops") || ms.getExpression().toString().equals("dev.kiln.dsl.Ops");
      if (!opsQualifier) {
        receiver = expr(ms.getExpression(), env, block);
      }
    } else {
      unsupported(m, "this kind of call");
      return null;
    }
    if (receiver == null) {
      if (ownMethod(name)) {
        return selfCall(name, m, env, block);
      }
      return op(name, m, env, block);
    }
    return switch (receiver) {
      case TensorV t -> tensorMethod(t.v(), name, m, env, block);
      case ModuleV mod -> moduleCall(mod, name, m, env, block);
      case SelfV s -> selfCall(name, m, env, block);
      case TopKV k when m.getArguments().isEmpty() && name.equals("values") -> new TensorV(k.values());
      case TopKV k when m.getArguments().isEmpty() && name.equals("indices") -> new TensorV(k.indices());
      default -> {
        unsupported(m, "the call '" + name + "' on " + m.getMethodSelect() + "; Kiln knows Ops, Tensor arithmetic and"
            + " sub-module forward calls");
        yield null;
      }
    };
  }

  private boolean ownMethod(String name) {
    for (Element e : type.getEnclosedElements()) {
      if (e.getKind() == ElementKind.METHOD && e.getSimpleName().contentEquals(name)) {
        return true;
      }
    }
    return false;
  }

  private Val selfCall(String name, MethodInvocationTree m, Env env, Block block) {
    ModuleIr.Signature fwd = module.forward();
    if (fwd == null || !fwd.method().equals(name)) {
      unsupported(m, "a call to the helper method '" + name + "'; only the module's own @Forward method can be"
          + " called (from @Loss), so that every op stays visible to the compiler");
    }
    return callNode(null, module.type(), name, m, env, block);
  }

  private Val moduleCall(ModuleV mod, String name, MethodInvocationTree m, Env env, Block block) {
    return callNode(mod.component(), mod.type(), mod.display() + "." + name, m, env, block);
  }

  private Val callNode(String component, String calleeType, String display, MethodInvocationTree m, Env env,
      Block block) {
    List<Value> args = new ArrayList<>();
    List<Pos> argPos = new ArrayList<>();
    for (ExpressionTree a : m.getArguments()) {
      args.add(tensor(a, env, block));
      argPos.add(pos(a));
    }
    Value out = values.make(label(m), Value.Elem.FLOAT);
    block.add(new Node.Call(component, calleeType, display, args, out, pos(m), argPos));
    return new TensorV(out);
  }

  private Val tensorMethod(Value self, String name, MethodInvocationTree m, Env env, Block block) {
    List<? extends ExpressionTree> args = m.getArguments();
    Primitive p = switch (name) {
      case "add" -> Primitive.ADD;
      case "sub" -> Primitive.SUB;
      case "mul" -> Primitive.MUL;
      case "div" -> Primitive.DIV;
      case "neg" -> Primitive.NEG;
      default -> null;
    };
    if (p == null) {
      unsupported(m, "Tensor." + name + " in a forward body; shapes are declared with @Shape, not queried");
    }
    Tree receiverTree = ((MemberSelectTree) m.getMethodSelect()).getExpression();
    if (p == Primitive.NEG) {
      if (!args.isEmpty()) {
        silent();
      }
      return new TensorV(atSite(pos(m), Map.of(self, pos(receiverTree)), null, null, block,
          () -> builder(block).prim(p, self)));
    }
    if (args.size() != 1) {
      silent();
    }
    Value other = tensor(args.get(0), env, block);
    Map<Value, Pos> ap = new HashMap<>();
    ap.put(other, pos(args.get(0)));
    ap.putIfAbsent(self, pos(receiverTree));
    return new TensorV(atSite(pos(m), ap, null, null, block, () -> builder(block).prim(p, self, other)));
  }

  /** The ops of {@code dev.kiln.dsl.Ops}. */
  private Val op(String name, MethodInvocationTree m, Env env, Block block) {
    List<? extends ExpressionTree> a = m.getArguments();
    Pos at = pos(m);
    switch (name) {
      case "einsum" -> {
        if (a.isEmpty()) {
          silent();
        }
        StringV spec = string(a.get(0), env, block, "einsum spec");
        EinsumSpec parsed;
        try {
          parsed = ShapeParser.parseEinsum(spec.s());
        } catch (ShapeSyntaxException e) {
          malformed(spec, e, "einsum spec");
          return null;
        }
        List<Value> operands = new ArrayList<>();
        Map<Value, Pos> ap = new HashMap<>();
        for (ExpressionTree x : a.subList(1, a.size())) {
          Value v = tensor(x, env, block);
          operands.add(v);
          ap.putIfAbsent(v, pos(x));
        }
        Pos specPos = pos(spec.tree());
        Value out = atSite(at, ap, specPos, null, block,
            () -> builder(block).prim(Primitive.EINSUM, new Attr.Einsum(parsed), operands.toArray(Value[]::new)));
        return new TensorV(out);
      }
      case "rearrange", "repeat", "reduce" -> {
        if (a.size() < 2) {
          silent();
        }
        Value x = tensor(a.get(0), env, block);
        StringV pat = string(a.get(1), env, block, name + " pattern");
        EinopsPattern parsed;
        try {
          parsed = ShapeParser.parsePattern(pat.s());
        } catch (ShapeSyntaxException e) {
          malformed(pat, e, name + " pattern");
          return null;
        }
        Reduction how = Reduction.SUM;
        int sizesFrom = 2;
        if (name.equals("reduce")) {
          if (a.size() < 3 || !(expr(a.get(2), env, block) instanceof EnumConstV r && r.type().equals("Reduction"))) {
            unsupported(a.size() < 3 ? m : a.get(2), "a reduction other than Reduction.SUM, MEAN, MAX or MIN");
            return null;
          }
          how = Reduction.valueOf(((EnumConstV) expr(a.get(2), env, block)).constant());
          sizesFrom = 3;
        }
        Map<String, Dim> sizes = new LinkedHashMap<>();
        for (ExpressionTree s : a.subList(sizesFrom, a.size())) {
          if (!(expr(s, env, block) instanceof SizeV sv)) {
            unsupported(s, "a dim size other than size(\"name\", value)");
            return null;
          }
          sizes.put(sv.name(), sv.dim());
        }
        Primitive p = switch (name) {
          case "repeat" -> Primitive.REPEAT;
          case "reduce" -> Primitive.REDUCE_PATTERN;
          default -> Primitive.REARRANGE;
        };
        Attr.Pattern attr = new Attr.Pattern(parsed, sizes, how);
        Pos specPos = pos(pat.tree());
        Value out = atSite(at, Map.of(x, pos(a.get(0))), specPos, null, block,
            () -> p == Primitive.REDUCE_PATTERN ? Composites.reduce(builder(block), x, attr)
                : builder(block).prim(p, attr, x));
        return new TensorV(out);
      }
      case "size" -> {
        if (a.size() != 2) {
          silent();
        }
        StringV n = string(a.get(0), env, block, "dim name");
        if (!ShapeParser.isName(n.s())) {
          report.add(Id.MalformedShape, pos(a.get(0)), "'" + n.s() + "' is not a dim name");
          throw new Abort();
        }
        return new SizeV(n.s(), dimArg(a.get(1), env, block));
      }
      case "topk" -> {
        if (a.size() != 2) {
          silent();
        }
        Value x = tensor(a.get(0), env, block);
        Dim k = dimArg(a.get(1), env, block);
        Map<Value, Pos> ap = Map.of(x, pos(a.get(0)));
        Value vals = atSite(at, ap, null, null, block,
            () -> builder(block).prim(Primitive.TOPK_VALUES, new Attr.TopK(k), x));
        Value idx = atSite(at, ap, null, null, block,
            () -> builder(block).prim(Primitive.TOPK_INDICES, new Attr.TopK(k), Value.Elem.INT, x));
        return new TopKV(vals, idx);
      }
      default -> {}
    }
    List<Value> in = new ArrayList<>();
    List<Val> raw = new ArrayList<>();
    Map<Value, Pos> ap = new HashMap<>();
    for (ExpressionTree x : a) {
      Val v = expr(x, env, block);
      raw.add(v);
      if (v instanceof TensorV t) {
        in.add(t.v());
        ap.putIfAbsent(t.v(), pos(x));
      }
    }
    Primitive unary = switch (name) {
      case "exp" -> Primitive.EXP;
      case "log" -> Primitive.LOG;
      case "sqrt" -> Primitive.SQRT;
      case "rsqrt" -> Primitive.RSQRT;
      case "tanh" -> Primitive.TANH;
      case "sigmoid" -> Primitive.SIGMOID;
      case "cos" -> Primitive.COS;
      case "sin" -> Primitive.SIN;
      default -> null;
    };
    if (unary != null) {
      requireTensors(m, raw, 1);
      return new TensorV(atSite(at, ap, null, null, block, () -> builder(block).prim(unary, in.get(0))));
    }
    Primitive binary = switch (name) {
      case "maximum" -> Primitive.MAXIMUM;
      case "greater" -> Primitive.GREATER;
      case "less" -> Primitive.LESS;
      case "where" -> Primitive.WHERE;
      case "gather" -> Primitive.GATHER;
      default -> null;
    };
    if (binary != null) {
      requireTensors(m, raw, binary == Primitive.WHERE ? 3 : 2);
      Value.Elem elem = binary == Primitive.GREATER || binary == Primitive.LESS ? Value.Elem.BOOL : Value.Elem.FLOAT;
      return new TensorV(atSite(at, ap, null, null, block,
          () -> builder(block).prim(binary, new Attr.None(), elem, in.toArray(Value[]::new))));
    }
    Composites.Builder b = builder(block);
    Value out = switch (name) {
      case "square" -> composite(at, ap, name, block, raw, m, 1, () -> Composites.square(b, in.get(0)));
      case "silu" -> composite(at, ap, name, block, raw, m, 1, () -> Composites.silu(b, in.get(0)));
      case "gelu" -> composite(at, ap, name, block, raw, m, 1, () -> Composites.gelu(b, in.get(0)));
      case "relu" -> composite(at, ap, name, block, raw, m, 1, () -> Composites.relu(b, in.get(0)));
      case "softmax" -> composite(at, ap, name, block, raw, m, 1, () -> Composites.softmax(b, in.get(0)));
      case "logSoftmax" -> composite(at, ap, name, block, raw, m, 1, () -> Composites.logSoftmax(b, in.get(0)));
      case "sum" -> composite(at, ap, name, block, raw, m, 1, () -> Composites.sum(b, in.get(0)));
      case "mean" -> composite(at, ap, name, block, raw, m, 1, () -> Composites.mean(b, in.get(0)));
      case "crossEntropy" ->
          composite(at, ap, name, block, raw, m, 2, () -> Composites.crossEntropy(b, in.get(0), in.get(1)));
      case "rmsNorm" -> {
        Scalar eps = scalarArg(raw, 2, m);
        yield composite(at, ap, name, block, raw.subList(0, 2), m, 2,
            () -> Composites.rmsNorm(b, in.get(0), in.get(1), eps));
      }
      case "rope" -> {
        Scalar theta = scalarArg(raw, 2, m);
        yield composite(at, ap, name, block, raw.subList(0, 2), m, 2,
            () -> Composites.rope(b, in.get(0), in.get(1), theta));
      }
      case "attention" -> {
        if (raw.size() != 4 || !(raw.get(3) instanceof EnumConstV mk && mk.type().equals("Mask"))) {
          unsupported(a.size() == 4 ? a.get(3) : m, "an attention mask other than Mask.NONE or Mask.CAUSAL");
          yield null;
        }
        Mask mask = Mask.valueOf(((EnumConstV) raw.get(3)).constant());
        yield composite(at, ap, name, block, raw.subList(0, 3), m, 3,
            () -> Composites.attention(b, in.get(0), in.get(1), in.get(2), mask));
      }
      default -> {
        unsupported(m, "'" + name + "' is not an op of dev.kiln.dsl.Ops");
        yield null;
      }
    };
    return new TensorV(out);
  }

  private Value composite(Pos at, Map<Value, Pos> ap, String name, Block block, List<Val> raw, Tree m, int tensors,
      java.util.function.Supplier<Value> body) {
    requireTensors(m, raw, tensors);
    return atSite(at, ap, null, name, block, body);
  }

  private void requireTensors(Tree m, List<Val> raw, int n) {
    if (raw.size() != n) {
      silent();
    }
    for (Val v : raw) {
      if (!(v instanceof TensorV)) {
        silent();
      }
    }
  }

  private Scalar scalarArg(List<Val> raw, int i, Tree m) {
    if (raw.size() <= i || !(raw.get(i) instanceof ScalarV s)) {
      silent();
      return null;
    }
    return s.s();
  }

  /** A dim given as a value: an int literal or an int hyper-parameter (whose config key is then a dim). */
  private Dim dimArg(ExpressionTree t, Env env, Block block) {
    Val v = expr(t, env, block);
    if (v instanceof ScalarV s) {
      if (s.s() instanceof Scalar.Lit l && l.value() == Math.rint(l.value()) && l.value() > 0) {
        return Dim.of((long) l.value());
      }
      if (s.s() instanceof Scalar.Hyper h && module.components().get(h.component()) instanceof ModuleIr.Hyper hy
          && hy.kind() == ModuleIr.HyperKind.INT) {
        return Dim.sym(h.configKey());
      }
    }
    unsupported(t, "a dim size other than a positive int literal or an int hyper-parameter");
    return null;
  }

  private StringV string(ExpressionTree t, Env env, Block block, String what) {
    Val v = expr(t, env, block);
    if (v instanceof StringV s) {
      return s;
    }
    unsupported(t, "a " + what + " that is not a string constant; the compiler must read it");
    return null;
  }

  private void malformed(StringV s, ShapeSyntaxException e, String what) {
    report.add(Id.MalformedShape, pos(s.tree()), "malformed " + what + ": " + e.problem() + " at column "
        + e.column() + " of the string\n" + e.caretLines());
    throw new Abort();
  }

  // ---- building -----------------------------------------------------------------------------------------------

  private Composites.Builder builder(Block block) {
    return (op, attr, elem, in) -> {
      Value out = values.make(siteComposite != null ? siteComposite + "(...)" : labelOf(op, in), elem);
      List<Pos> argPos = new ArrayList<>();
      for (Value v : in) {
        argPos.add(siteArgs.getOrDefault(v, sitePos));
      }
      current.add(new Node.Prim(op, List.of(in), attr, out, sitePos, argPos, siteSpec, siteComposite, siteGroup));
      return out;
    };
  }

  private static String labelOf(Primitive op, Value[] in) {
    return op.name().toLowerCase() + "(" + String.join(", ", java.util.Arrays.stream(in).map(Value::label).toList())
        + ")";
  }

  private Value atSite(Pos at, Map<Value, Pos> args, Pos spec, String composite, Block block,
      java.util.function.Supplier<Value> body) {
    Pos p0 = sitePos;
    Map<Value, Pos> a0 = siteArgs;
    Pos s0 = siteSpec;
    String c0 = siteComposite;
    int g0 = siteGroup;
    Block b0 = current;
    sitePos = at;
    siteArgs = args;
    siteSpec = spec;
    siteComposite = composite;
    siteGroup = composite == null ? 0 : ++groups;
    current = block;
    try {
      Value v = body.get();
      return v;
    } finally {
      sitePos = p0;
      siteArgs = a0;
      siteSpec = s0;
      siteComposite = c0;
      siteGroup = g0;
      current = b0;
    }
  }

  // ---- helpers ------------------------------------------------------------------------------------------------

  /**
   * The position of an expression: its leftmost token, so a diagnostic's column is where the expression starts
   * (javac places a call at its '(' and a field access at its '.').
   */
  private Pos pos(Tree t) {
    return new Pos.AtTree(leftmost(t), unit);
  }

  static Tree leftmost(Tree t) {
    while (true) {
      switch (t) {
        case MethodInvocationTree m -> t = m.getMethodSelect();
        case MemberSelectTree ms -> t = ms.getExpression();
        case BinaryTree b -> t = b.getLeftOperand();
        case ConditionalExpressionTree c -> t = c.getCondition();
        case com.sun.source.tree.ArrayAccessTree a -> t = a.getExpression();
        case AssignmentTree a -> t = a.getVariable();
        default -> {
          return t;
        }
      }
    }
  }

  private static String label(Tree t) {
    String s = t.toString().replaceAll("\\s+", " ");
    return s.length() > 60 ? s.substring(0, 57) + "..." : s;
  }

  private static String describe(Tree t) {
    return switch (t.getKind()) {
      case WHILE_LOOP -> "a while loop";
      case DO_WHILE_LOOP -> "a do-while loop";
      case FOR_LOOP -> "a counted for loop (use a for-each over a @Repeat list)";
      case TRY -> "a try statement";
      case THROW -> "a throw statement";
      case SYNCHRONIZED -> "a synchronized block";
      case LAMBDA_EXPRESSION -> "a lambda";
      case MEMBER_REFERENCE -> "a method reference";
      case NEW_CLASS -> "object creation with new";
      case NEW_ARRAY -> "an array";
      case ARRAY_ACCESS -> "array indexing";
      case TYPE_CAST -> "a cast";
      case INSTANCE_OF -> "instanceof";
      case SWITCH_EXPRESSION -> "a switch expression (use a switch statement)";
      case LABELED_STATEMENT -> "a labelled statement";
      case BREAK -> "break";
      case CONTINUE -> "continue";
      case ASSERT -> "assert";
      case CLASS, RECORD, ENUM, INTERFACE -> "a local class";
      case PLUS_ASSIGNMENT, MINUS_ASSIGNMENT, MULTIPLY_ASSIGNMENT, DIVIDE_ASSIGNMENT -> "a compound assignment";
      case POSTFIX_INCREMENT, POSTFIX_DECREMENT, PREFIX_INCREMENT, PREFIX_DECREMENT -> "++/--";
      default -> "'" + label(t) + "' (" + t.getKind().toString().toLowerCase().replace('_', ' ') + ")";
    };
  }

  private void unsupported(Tree t, String what) {
    report.add(Id.UnsupportedConstruct, new Pos.AtTree(t instanceof ExpressionTree ? leftmost(t) : t, unit),
        "unsupported in a Kiln " + "forward body: " + what);
    throw new Abort();
  }

  /** Ill-typed Java: javac reports it better than Kiln could, once the processor stays quiet. */
  private static void silent() {
    throw new Abort();
  }

  private static <T> List<T> concat(List<? extends T> a, List<? extends T> b) {
    List<T> out = new ArrayList<>(a);
    out.addAll(b);
    return out;
  }
}
