package dev.kiln.runtime.train;

import dev.kiln.runtime.io.AtomicFiles;
import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.FontMetrics;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.geom.Path2D;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import javax.imageio.ImageIO;

/**
 * Draws the loss curve of a run as a PNG: training loss (a line) and validation loss (a line with dots) against
 * the step, with labelled axes, ticks at round numbers and a legend. Uses the JDK's {@code java.awt} in headless
 * mode and {@code ImageIO}, so it needs no display and no dependency.
 */
public final class LossPlot {
  private static final int W = 960;
  private static final int H = 600;
  private static final int LEFT = 90;
  private static final int RIGHT = 30;
  private static final int TOP = 60;
  private static final int BOTTOM = 70;
  private static final Color TRAIN = new Color(31, 119, 180);
  private static final Color VAL = new Color(230, 110, 20);

  /** A point of a curve. */
  public record Point(double step, double loss) {}

  private LossPlot() {}

  /** Writes the plot of {@code train} and {@code validation} (either may be empty) to {@code png}, atomically. */
  public static void write(Path png, String title, List<Point> train, List<Point> validation) throws IOException {
    if (System.getProperty("java.awt.headless") == null) {
      System.setProperty("java.awt.headless", "true");
    }
    BufferedImage img = render(title, train, validation);
    AtomicFiles.write(png, out -> {
      if (!ImageIO.write(img, "png", out)) {
        throw new IOException("no PNG writer in this JDK");
      }
    });
  }

  static BufferedImage render(String title, List<Point> train, List<Point> validation) {
    BufferedImage img = new BufferedImage(W, H, BufferedImage.TYPE_INT_RGB);
    Graphics2D g = img.createGraphics();
    g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
    g.setRenderingHint(RenderingHints.KEY_TEXT_ANTIALIASING, RenderingHints.VALUE_TEXT_ANTIALIAS_ON);
    g.setColor(Color.WHITE);
    g.fillRect(0, 0, W, H);

    double xMin = Double.POSITIVE_INFINITY;
    double xMax = Double.NEGATIVE_INFINITY;
    double yMin = Double.POSITIVE_INFINITY;
    double yMax = Double.NEGATIVE_INFINITY;
    for (List<Point> series : List.of(train, validation)) {
      for (Point p : series) {
        if (Double.isFinite(p.loss())) {
          xMin = Math.min(xMin, p.step());
          xMax = Math.max(xMax, p.step());
          yMin = Math.min(yMin, p.loss());
          yMax = Math.max(yMax, p.loss());
        }
      }
    }
    if (xMin > xMax) { // nothing finite to draw
      xMin = 0;
      xMax = 1;
      yMin = 0;
      yMax = 1;
    }
    if (xMax == xMin) {
      xMax = xMin + 1;
    }
    if (yMax == yMin) {
      yMax = yMin + 1;
    }
    double pad = (yMax - yMin) * 0.05;
    yMin -= pad;
    yMax += pad;
    double[] xTicks = ticks(xMin, xMax);
    double[] yTicks = ticks(yMin, yMax);
    xMin = Math.min(xMin, xTicks[0]);
    xMax = Math.max(xMax, xTicks[xTicks.length - 1]);
    yMin = Math.min(yMin, yTicks[0]);
    yMax = Math.max(yMax, yTicks[yTicks.length - 1]);
    Axes ax = new Axes(xMin, xMax, yMin, yMax);

    Font small = new Font(Font.SANS_SERIF, Font.PLAIN, 13);
    Font label = new Font(Font.SANS_SERIF, Font.PLAIN, 15);
    g.setFont(small);
    FontMetrics fm = g.getFontMetrics();
    g.setStroke(new BasicStroke(1f));
    for (double t : xTicks) {
      int x = ax.x(t);
      g.setColor(new Color(230, 230, 230));
      g.drawLine(x, TOP, x, H - BOTTOM);
      g.setColor(Color.DARK_GRAY);
      g.drawLine(x, H - BOTTOM, x, H - BOTTOM + 5);
      String s = number(t);
      g.drawString(s, x - fm.stringWidth(s) / 2, H - BOTTOM + 20);
    }
    for (double t : yTicks) {
      int y = ax.y(t);
      g.setColor(new Color(230, 230, 230));
      g.drawLine(LEFT, y, W - RIGHT, y);
      g.setColor(Color.DARK_GRAY);
      g.drawLine(LEFT - 5, y, LEFT, y);
      String s = number(t);
      g.drawString(s, LEFT - 9 - fm.stringWidth(s), y + fm.getAscent() / 2 - 1);
    }
    g.setColor(Color.BLACK);
    g.drawRect(LEFT, TOP, W - LEFT - RIGHT, H - TOP - BOTTOM);

    g.setFont(label);
    fm = g.getFontMetrics();
    g.drawString("step", LEFT + (W - LEFT - RIGHT - fm.stringWidth("step")) / 2, H - 22);
    Graphics2D rot = (Graphics2D) g.create();
    rot.rotate(-Math.PI / 2);
    String yl = "loss (cross-entropy, nats)";
    rot.drawString(yl, -(TOP + (H - TOP - BOTTOM + fm.stringWidth(yl)) / 2), 28);
    rot.dispose();
    g.setFont(new Font(Font.SANS_SERIF, Font.BOLD, 17));
    fm = g.getFontMetrics();
    g.drawString(title, (W - fm.stringWidth(title)) / 2, 34);

    g.setClip(LEFT + 1, TOP + 1, W - LEFT - RIGHT - 1, H - TOP - BOTTOM - 1);
    curve(g, ax, train, TRAIN, train.size() > 400 ? 1.2f : 1.8f, false);
    curve(g, ax, validation, VAL, 2.2f, true);
    g.setClip(null);

    // Legend, top right inside the frame.
    g.setFont(small);
    fm = g.getFontMetrics();
    int lx = W - RIGHT - 170;
    int ly = TOP + 12;
    g.setColor(new Color(255, 255, 255, 230));
    g.fillRect(lx, ly, 155, 50);
    g.setColor(Color.GRAY);
    g.drawRect(lx, ly, 155, 50);
    legendRow(g, lx + 10, ly + 17, TRAIN, "train loss", false, fm);
    legendRow(g, lx + 10, ly + 38, VAL, "validation loss", true, fm);
    g.dispose();
    return img;
  }

  private record Axes(double xMin, double xMax, double yMin, double yMax) {
    int x(double v) {
      return LEFT + (int) Math.round((v - xMin) / (xMax - xMin) * (W - LEFT - RIGHT));
    }

    int y(double v) {
      return H - BOTTOM - (int) Math.round((v - yMin) / (yMax - yMin) * (H - TOP - BOTTOM));
    }
  }

  private static void curve(Graphics2D g, Axes ax, List<Point> pts, Color c, float width, boolean dots) {
    g.setColor(c);
    g.setStroke(new BasicStroke(width, BasicStroke.CAP_ROUND, BasicStroke.JOIN_ROUND));
    Path2D.Double path = new Path2D.Double();
    boolean open = false;
    for (Point p : pts) {
      if (!Double.isFinite(p.loss())) {
        open = false;
        continue;
      }
      double x = ax.x(p.step());
      double y = ax.y(p.loss());
      if (open) {
        path.lineTo(x, y);
      } else {
        path.moveTo(x, y);
        open = true;
      }
      if (dots) {
        g.fillOval((int) x - 3, (int) y - 3, 7, 7);
      }
    }
    g.draw(path);
  }

  private static void legendRow(Graphics2D g, int x, int y, Color c, String text, boolean dot, FontMetrics fm) {
    g.setColor(c);
    g.setStroke(new BasicStroke(2.2f));
    g.drawLine(x, y - 4, x + 26, y - 4);
    if (dot) {
      g.fillOval(x + 10, y - 7, 7, 7);
    }
    g.setColor(Color.BLACK);
    g.drawString(text, x + 34, y);
  }

  /** Round tick values covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about 6 of them. */
  static double[] ticks(double lo, double hi) {
    double raw = (hi - lo) / 6;
    double mag = Math.pow(10, Math.floor(Math.log10(raw)));
    double step = raw / mag < 1.5 ? mag : raw / mag < 3.5 ? 2 * mag : raw / mag < 7.5 ? 5 * mag : 10 * mag;
    double first = Math.floor(lo / step) * step;
    double last = Math.ceil(hi / step) * step;
    int n = (int) Math.round((last - first) / step) + 1;
    double[] t = new double[n];
    for (int i = 0; i < n; i++) {
      t[i] = first + i * step;
    }
    return t;
  }

  private static String number(double v) {
    if (Math.abs(v) >= 10_000 && v == Math.rint(v)) {
      return v % 1000 == 0 ? String.format(Locale.ROOT, "%.0fk", v / 1000) : String.format(Locale.ROOT, "%.1fk", v / 1000);
    }
    if (v == Math.rint(v)) {
      return String.format(Locale.ROOT, "%.0f", v);
    }
    String s = String.format(Locale.ROOT, "%.3f", v);
    return s.replaceAll("0+$", "").replaceAll("\\.$", "");
  }
}
