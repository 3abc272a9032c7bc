package whatsappmedia

import (
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// metrics are the module's Prometheus collectors, named
// caddy_whatsapp_media_*. They are created once per process and registered
// on the metrics registry of every config that provisions the handler, as
// Caddy's own modules do; they appear on the admin endpoint's /metrics
// when the global metrics option is on.
var metrics = struct {
	once          sync.Once
	requests      *prometheus.CounterVec
	inFlight      *prometheus.GaugeVec
	bytes         *prometheus.CounterVec
	spooled       prometheus.Counter
	upstream      *prometheus.HistogramVec
	accountCache  *prometheus.CounterVec
	downloadAbort *prometheus.CounterVec
	drained       prometheus.Counter
	draining      prometheus.Gauge
	drainsRefused prometheus.Counter
	spoolFull     prometheus.Counter
	mediaCache    *prometheus.CounterVec
	purges        *prometheus.CounterVec
	channelUp     *prometheus.GaugeVec
	undeliverable *prometheus.CounterVec
	urlFetches    *prometheus.CounterVec
	urlRefusals   *prometheus.CounterVec

	// Children looked up once, for the hot path.
	cacheHit, cacheMiss           prometheus.Counter
	mediaCacheHit, mediaCacheMiss prometheus.Counter
}{}

func initMetrics() {
	metrics.once.Do(func() {
		const ns, sub = "caddy", "whatsapp_media"
		metrics.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "requests_total",
			Help: "Media requests by route, status and error code (OK for successes, INCOMPLETE for broken-off downloads).",
		}, []string{"route", "status", "code"})
		metrics.inFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "transfers_in_flight",
			Help: "Media requests being served now, by route.",
		}, []string{"route"})
		metrics.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "bytes_total",
			Help: "File bytes moved: uploaded to Meta, downloaded to clients.",
		}, []string{"direction"})
		metrics.spooled = prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "spooled_uploads_total",
			Help: "Multipart uploads whose file part was spooled to disk: it came before phoneNumberId, or its type could only be told by a type field after it.",
		})
		metrics.upstream = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "upstream_duration_seconds",
			Help:    "Time until an upstream answered (its headers): graph (Meta's Graph API), cdn (Meta's media CDN), introspection (the app).",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"upstream"})
		metrics.accountCache = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "account_cache_total",
			Help: "Introspection cache look-ups by result: hit or miss.",
		}, []string{"result"})
		metrics.cacheHit = metrics.accountCache.WithLabelValues("hit")
		metrics.cacheMiss = metrics.accountCache.WithLabelValues("miss")
		metrics.downloadAbort = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "download_aborts_total",
			Help: "Downloads broken off because the CDN's bytes were incomplete, too many, corrupt or failed mid-body, or the client went away.",
		}, []string{"reason"})
		metrics.mediaCache = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "media_cache_total",
			Help: "Media metadata cache look-ups by result: hit (no Graph request) or miss.",
		}, []string{"result"})
		metrics.mediaCacheHit = metrics.mediaCache.WithLabelValues("hit")
		metrics.mediaCacheMiss = metrics.mediaCache.WithLabelValues("miss")
		metrics.purges = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "purges_total",
			Help: "Introspection cache purges by source: admin (the admin endpoint) or channel (the Redis purge channel).",
		}, []string{"source"})
		metrics.channelUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "purge_channel_up",
			Help: "1 while the Redis purge channel is subscribed, 0 while it is down, by channel and Redis server (host:port).",
		}, []string{"channel", "server"})
		metrics.spoolFull = prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "spool_full_total",
			Help: "Uploads refused (503 SPOOL_FULL) because spooling them would exceed spool_budget.",
		})
		metrics.drained = prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "drained_bytes_total",
			Help: "Bytes of refused request bodies read and discarded so that the client hears the answer (the lingering close).",
		})
		metrics.draining = prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "drains_in_progress",
			Help: "Refused request bodies being drained now (not counted as transfers in flight).",
		})
		metrics.drainsRefused = prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "drains_refused_total",
			Help: "Refusals answered without draining their body (Connection: close) because max_draining drains were in progress.",
		})
		metrics.undeliverable = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "undeliverable_uploads_total",
			Help: "Uploads refused with 422 MEDIA_NOT_DELIVERABLE (format_checks), by the delivery rule the file broke.",
		}, []string{"rule"})
		for _, r := range media.Rules {
			metrics.undeliverable.WithLabelValues(r)
		}
		metrics.urlFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "url_fetches_total",
			Help: "Fetches of uploads from a URL by result: ok, status (the origin answered other than 200 or 203), redirects, timeout, failed.",
		}, []string{"result"})
		metrics.urlRefusals = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: ns, Subsystem: sub, Name: "url_refusals_total",
			Help: "Uploads from a URL refused, by reason: scheme, userinfo, malformed (no fetch made), redirect (to such a URL), or the range of an address the guard refused to dial (loopback, private, link_local, ...).",
		}, []string{"reason"})
	})
}

func allCollectors() []prometheus.Collector {
	return []prometheus.Collector{metrics.requests, metrics.inFlight, metrics.bytes, metrics.spooled,
		metrics.upstream, metrics.accountCache, metrics.downloadAbort, metrics.drained, metrics.draining, metrics.drainsRefused, metrics.spoolFull, metrics.mediaCache,
		metrics.purges, metrics.channelUp, metrics.undeliverable, metrics.urlFetches, metrics.urlRefusals}
}

// registerMetrics registers the collectors on reg (a config's registry).
func registerMetrics(reg *prometheus.Registry) error {
	initMetrics()
	if reg == nil {
		return nil
	}
	for _, c := range allCollectors() {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return err
		}
	}
	return nil
}

// observeUpstream records how long an upstream took to answer.
func observeUpstream(upstream string, start time.Time) {
	metrics.upstream.WithLabelValues(upstream).Observe(time.Since(start).Seconds())
}

func init() { initMetrics() }

// requestTally counts one media request: in flight while it is served,
// then by route, status and code. w records the status written.
type requestTally struct {
	label string
	w     *statusWriter
	// code is the answer's error code; empty for a success.
	code    string
	settled bool // no longer counted in flight
}

func countRequest(route routeKind, w http.ResponseWriter) *requestTally {
	t := &requestTally{label: route.String(), w: &statusWriter{ResponseWriter: w}}
	metrics.inFlight.WithLabelValues(t.label).Inc()
	return t
}

// done counts the request; deferred, it also sees a panic: a download
// broken off on purpose (http.ErrAbortHandler), a refusal whose body could
// not be drained, or a bug. It counts a panic that is not a refusal as
// INCOMPLETE, and lets net/http deal with the panic.
func (t *requestTally) done() {
	t.settle()
	code := t.code
	if code == "" {
		code = "OK"
	}
	rec := recover()
	if rec != nil && t.code == "" {
		code = "INCOMPLETE"
	}
	metrics.requests.WithLabelValues(t.label, strconv.Itoa(t.w.status()), code).Inc()
	if rec != nil {
		panic(rec)
	}
}

// settle stops counting the request in flight, once.
func (t *requestTally) settle() {
	if !t.settled {
		t.settled = true
		metrics.inFlight.WithLabelValues(t.label).Dec()
	}
}

// statusWriter remembers the status written, for metrics. Unwrap lets
// http.ResponseController reach the writers below it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
