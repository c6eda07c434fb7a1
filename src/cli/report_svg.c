/* fewshot report --svg DIR: the report's curves as static SVG figures (for papers): the
 * same charts, lines, seed bands and phase-change marks as the HTML page. */
#include "cli/report.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fileio.h"

enum { W = 860, H = 420, ML = 70, MR = 230, MT = 40, MB = 52 };

/* Okabe-Ito: distinguishable with the common colour-vision deficiencies (as the page). */
static const char *const palette[] = {"#0072B2", "#E69F00", "#009E73", "#D55E00",
                                      "#CC79A7", "#56B4E9", "#000000", "#F0E442"};

static void colour(int i, char *out, size_t len)
{
    if (i < 8)
        snprintf(out, len, "%s", palette[i]);
    else
        snprintf(out, len, "hsl(%d,65%%,42%%)", (i * 137) % 360);
}

typedef struct {
    double lo, hi;
    bool log;
    double px0, px1; /* pixel range */
} axis;

static double to_px(const axis *a, double v)
{
    double t = a->log ? (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo)) : (v - a->lo) / (a->hi - a->lo);
    return a->px0 + t * (a->px1 - a->px0);
}

static bool in_axis(const axis *a, double v) { return isfinite(v) && (!a->log || v > 0); }

static void fmt_count(double v, char *out, size_t len)
{
    if (v >= 1e6)
        snprintf(out, len, "%gM", v / 1e6);
    else if (v >= 1e3)
        snprintf(out, len, "%gk", v / 1e3);
    else
        snprintf(out, len, "%g", v);
}

/* Tick step: 1, 2 or 5 times a power of ten, about `want` ticks over the range. */
static double nice_step(double range, int want)
{
    double raw = range / want, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

/* Sequence-axis ticks: a nice linear step, or 1, 2, 5 times powers of ten (log axis; only
 * the powers when the range spans more than three decades). */
static int x_ticks(const axis *a, double *out, int max)
{
    int n = 0;
    if (!a->log) {
        double step = nice_step(a->hi - a->lo, 6);
        for (double v = ceil(a->lo / step) * step; v <= a->hi + 1e-9 * step && n < max; v += step)
            out[n++] = v;
        return n;
    }
    bool minor = log10(a->hi / a->lo) <= 3;
    for (double p = pow(10, floor(log10(a->lo))); p <= a->hi && n < max; p *= 10)
        for (int m = 1; m <= 5 && n < max; m += m == 1 ? 1 : 3) {
            double v = m * p;
            if (v >= a->lo * (1 - 1e-9) && v <= a->hi * (1 + 1e-9) && (m == 1 || minor))
                out[n++] = v;
        }
    return n;
}

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else
            fputc(*s, f);
    }
}

static void path_of(FILE *f, const axis *ax, const axis *ay, const rp_series *s, const double *y)
{
    bool pen = false;
    for (size_t i = 0; i < s->n; i++) {
        if (!in_axis(ax, s->x[i]) || !isfinite(y[i])) {
            pen = false;
            continue;
        }
        fprintf(f, "%c%.1f,%.1f", pen ? 'L' : 'M', to_px(ax, s->x[i]), to_px(ay, y[i]));
        pen = true;
    }
}

static void chart_svg(FILE *f, const rp_chart *c, bool logx)
{
    axis ax = {INFINITY, -INFINITY, logx, ML, W - MR}, ay = {INFINITY, -INFINITY, false, H - MB, MT};
    for (int l = 0; l < c->num_lines; l++) {
        const rp_line *ln = &c->lines[l];
        for (size_t i = 0; i < ln->mean.n; i++) {
            if (!in_axis(&ax, ln->mean.x[i]) || !isfinite(ln->mean.y[i]))
                continue;
            ax.lo = fmin(ax.lo, ln->mean.x[i]);
            ax.hi = fmax(ax.hi, ln->mean.x[i]);
            double lo = ln->lo.n ? ln->lo.y[i] : ln->mean.y[i], hi = ln->hi.n ? ln->hi.y[i] : ln->mean.y[i];
            ay.lo = fmin(ay.lo, lo);
            ay.hi = fmax(ay.hi, hi);
        }
    }
    if (c->metric == RP_ACC) {
        ay.lo = 0;
        ay.hi = 1;
    }
    if (!(ax.hi > ax.lo)) {
        ax.lo = logx ? 1 : 0;
        ax.hi = isfinite(ax.hi) ? ax.hi * 10 + 1 : 1;
    }
    if (!(ay.hi > ay.lo)) {
        ay.lo = isfinite(ay.lo) ? ay.lo - 1 : 0;
        ay.hi = ay.lo + 2;
    }
    if (c->metric != RP_ACC) {
        double pad = 0.05 * (ay.hi - ay.lo);
        ay.lo = fmax(0, ay.lo - pad);
        ay.hi += pad;
    }
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            W, H, W, H);
    fprintf(f, "<text x=\"%d\" y=\"22\" font-size=\"15\" font-weight=\"bold\">", ML);
    xml_text(f, c->title);
    fputs("</text>\n", f);
    /* grid and ticks */
    double ys = nice_step(ay.hi - ay.lo, 5);
    for (double v = ceil(ay.lo / ys) * ys; v <= ay.hi + 1e-9 * ys; v += ys) {
        double y = to_px(&ay, v);
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                   "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
                ML, W - MR, y, y, ML - 6, y + 4, fabs(v) < 1e-12 ? 0 : v);
    }
    double xt[64];
    int nx = x_ticks(&ax, xt, 64);
    for (int i = 0; i < nx; i++) {
        char t[32];
        fmt_count(xt[i], t, sizeof t);
        double x = to_px(&ax, xt[i]);
        fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"#ddd\"/>"
                   "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n",
                x, x, MT, H - MB, x, H - MB + 16, t);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n", ML, MT,
            W - MR - ML, H - MB - MT);
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">sequences seen%s</text>\n", (ML + W - MR) / 2, H - 12,
            logx ? " (log scale)" : "");
    fprintf(f, "<text transform=\"translate(18,%d) rotate(-90)\" text-anchor=\"middle\">%s</text>\n", (MT + H - MB) / 2,
            c->metric == RP_ACC ? "query accuracy" : "loss");
    fprintf(f, "<clipPath id=\"plot\"><rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\"/></clipPath>\n<g clip-path=\"url(#plot)\">\n",
            ML, MT, W - MR - ML, H - MB - MT);
    for (int l = 0; l < c->num_lines; l++) {
        const rp_line *ln = &c->lines[l];
        char col[32];
        colour(l, col, sizeof col);
        if (ln->lo.n) { /* band: hi forward, lo backward */
            fprintf(f, "<path fill=\"%s\" fill-opacity=\"0.18\" stroke=\"none\" d=\"", col);
            bool first = true;
            for (size_t i = 0; i < ln->hi.n; i++)
                if (in_axis(&ax, ln->hi.x[i])) {
                    fprintf(f, "%c%.1f,%.1f", first ? 'M' : 'L', to_px(&ax, ln->hi.x[i]), to_px(&ay, ln->hi.y[i]));
                    first = false;
                }
            for (size_t i = ln->lo.n; i-- > 0;)
                if (in_axis(&ax, ln->lo.x[i]))
                    fprintf(f, "L%.1f,%.1f", to_px(&ax, ln->lo.x[i]), to_px(&ay, ln->lo.y[i]));
            fputs("Z\"/>\n", f);
        }
        fprintf(f, "<path fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" d=\"", col);
        path_of(f, &ax, &ay, &ln->mean, ln->mean.y);
        fputs("\"/>\n", f);
        if (in_axis(&ax, ln->phase) && ln->phase >= ax.lo && ln->phase <= ax.hi) {
            double x = to_px(&ax, ln->phase);
            fprintf(f, "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-dasharray=\"5,4\"/>\n", x,
                    x, MT, H - MB, col);
        }
    }
    fputs("</g>\n", f);
    /* legend */
    int shown = c->num_lines < 22 ? c->num_lines : 22;
    for (int l = 0; l < shown; l++) {
        char col[32];
        colour(l, col, sizeof col);
        int y = MT + 8 + 16 * l;
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%d\" y2=\"%d\" stroke=\"%s\" stroke-width=\"3\"/><text x=\"%d\" y=\"%d\">",
                W - MR + 12, W - MR + 34, y, y, col, W - MR + 40, y + 4);
        char label[40];
        snprintf(label, sizeof label, "%.39s", c->lines[l].label);
        xml_text(f, label);
        fputs("</text>\n", f);
    }
    if (shown < c->num_lines)
        fprintf(f, "<text x=\"%d\" y=\"%d\">... %d more</text>\n", W - MR + 12, MT + 12 + 16 * shown,
                c->num_lines - shown);
    fprintf(f, "<text x=\"%d\" y=\"%d\" fill=\"#555\">dashed: phase change</text>\n", W - MR + 12, H - MB);
    fputs("</svg>\n", f);
}

int rp_write_svgs(const rp_report *r, const char *dir, bool logx, fs_error *err)
{
    if (mkdir(dir, 0755) && errno != EEXIST)
        return fs_fail(err, "--svg %s: cannot create the directory (%s)", dir, strerror(errno));
    rp_chart *charts;
    int n = rp_charts(r, &charts);
    for (int c = 0; c < n; c++) {
        char slug[120], path[1400];
        size_t k = 0;
        for (const char *t = charts[c].title; *t && *t != '(' && k + 1 < sizeof slug; t++) {
            char ch = *t;
            bool word = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z');
            if (word)
                slug[k++] = (char)(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
            else if (k && slug[k - 1] != '_')
                slug[k++] = '_';
        }
        while (k && slug[k - 1] == '_')
            k--;
        slug[k] = 0;
        snprintf(path, sizeof path, "%s/%02d_%s.svg", dir, c + 1, slug);
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f) {
            rp_charts_free(charts, n);
            return fs_fail(err, "out of memory");
        }
        chart_svg(f, &charts[c], logx);
        fclose(f);
        int rc = fs_write_file_atomic(path, text, err);
        free(text);
        if (rc) {
            rp_charts_free(charts, n);
            return -1;
        }
    }
    rp_charts_free(charts, n);
    return n;
}
