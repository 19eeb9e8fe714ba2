package bench

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Plot size: wide enough for a 60-second window to stay readable.
const (
	plotWidth  = 9 * vg.Inch
	plotHeight = 4.5 * vg.Inch
)

// Slug names a result in file names: workload-target-mode-c<C>[-r<rate>].
func (r *Result) Slug() string {
	s := fmt.Sprintf("%s-%s-%s-c%d", r.Workload, r.Target, r.Mode, r.Concurrency)
	if r.Rate > 0 {
		s += "-r" + strconv.FormatFloat(r.Rate, 'f', -1, 64)
	}
	return s
}

func (r *Result) label() string {
	s := fmt.Sprintf("%s %s %s c=%d", r.Workload, r.Target, r.Mode, r.Concurrency)
	if r.Rate > 0 {
		s += fmt.Sprintf(" %g/s", r.Rate)
	}
	return s
}

func newPlot(title, xLabel, yLabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.Padding = vg.Points(8)
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	return p
}

func addLine(p *plot.Plot, name string, i int, xys plotter.XYs) error {
	if len(xys) == 0 {
		return nil
	}
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color = plotutil.Color(i)
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}

func writeSVG(w io.Writer, p *plot.Plot) error {
	wt, err := p.WriterTo(plotWidth, plotHeight, "svg")
	if err != nil {
		return err
	}
	_, err = wt.WriteTo(w)
	return err
}

// WriteLatencyPlot draws p50 and p99 for each second of r's window as SVG:
// a stall, a leader election or a compaction shows as a spike at the
// second it happened, which the run's percentiles average away.
func WriteLatencyPlot(w io.Writer, r *Result) error {
	p := newPlot(r.label()+": latency over time", "seconds into the measuring window", "latency (ms)")
	var p50, p99 plotter.XYs
	for _, s := range r.PerSecond {
		if s.Ops == 0 {
			continue
		}
		x := float64(s.T) + 0.5
		p50 = append(p50, plotter.XY{X: x, Y: s.P50})
		p99 = append(p99, plotter.XY{X: x, Y: s.P99})
	}
	if err := addLine(p, "p50", 0, p50); err != nil {
		return err
	}
	if err := addLine(p, "p99", 1, p99); err != nil {
		return err
	}
	p.Y.Min = 0
	p.X.Min, p.X.Max = 0, max(float64(len(r.PerSecond)), 1)
	return writeSVG(w, p)
}

// percentileTicks label the percentile axis, which is log(1/(1-q)) so that
// each added nine gets the same width, as in HdrHistogram's plots.
var percentileTicks = plot.ConstantTicks{
	{Value: 1, Label: "0%"}, {Value: 2, Label: "50%"}, {Value: 10, Label: "90%"},
	{Value: 100, Label: "99%"}, {Value: 1e3, Label: "99.9%"}, {Value: 1e4, Label: "99.99%"},
	{Value: 1e5, Label: "99.999%"}, {Value: 1e6, Label: "99.9999%"},
}

// WritePercentilePlot draws the latency at each percentile for every result
// as SVG, one line per run, up to the last percentile the run has samples
// for (a run of 10,000 operations has no meaningful p99.999).
func WritePercentilePlot(w io.Writer, results []*Result) error {
	p := newPlot("latency by percentile", "percentile", "latency (ms)")
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = percentileTicks
	maxX := 10.0
	for i, r := range results {
		h := r.Hist
		if h == nil || h.Count() == 0 {
			continue
		}
		top := min(math.Log10(float64(h.Count())), 6)
		var xys plotter.XYs
		for k := 0.0; k <= top*20; k++ { // 20 points per nine
			x := math.Pow(10, k/20)
			xys = append(xys, plotter.XY{X: x, Y: ms(h.Quantile(1 - 1/x))})
		}
		maxX = max(maxX, xys[len(xys)-1].X)
		if err := addLine(p, r.label(), i, xys); err != nil {
			return err
		}
	}
	p.X.Min, p.X.Max = 1, maxX
	p.Y.Min = 0
	return writeSVG(w, p)
}

// PlotFiles returns the SVG files WritePlots writes next to jsonPath: a
// latency-over-time plot per result (none for a skipped one: WritePlots
// leaves it out) and one percentile plot of them all.
func PlotFiles(jsonPath string, results []*Result) (perRun []string, percentiles string) {
	base := strings.TrimSuffix(jsonPath, filepath.Ext(jsonPath))
	for _, r := range results {
		perRun = append(perRun, base+"."+r.Slug()+".latency.svg")
	}
	return perRun, base + ".percentiles.svg"
}

// WritePlots writes the files PlotFiles names and returns their paths.
func WritePlots(jsonPath string, results []*Result) ([]string, error) {
	perRun, pct := PlotFiles(jsonPath, results)
	write := func(path string, draw func(io.Writer) error) error {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := draw(f); err != nil {
			f.Close()
			return fmt.Errorf("%s: %w", path, err)
		}
		return f.Close()
	}
	var written []string
	var ran []*Result
	for i, r := range results {
		if label, _ := r.NotRun(); label != "" {
			continue // nothing measured, nothing to draw
		}
		if err := write(perRun[i], func(w io.Writer) error { return WriteLatencyPlot(w, r) }); err != nil {
			return nil, err
		}
		written = append(written, perRun[i])
		ran = append(ran, r)
	}
	if err := write(pct, func(w io.Writer) error { return WritePercentilePlot(w, ran) }); err != nil {
		return nil, err
	}
	return append(written, pct), nil
}
