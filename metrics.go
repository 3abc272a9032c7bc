package whatsappmedia

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the module's Prometheus collectors. They are created once
// per process and registered on the metrics registry of every config that
// provisions the handler, as Caddy's own modules do.
var metrics = struct {
	once          sync.Once
	downloadAbort *prometheus.CounterVec
}{}

func registerMetrics(reg *prometheus.Registry) error {
	metrics.once.Do(func() {
		metrics.downloadAbort = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "whatsapp_media",
			Name:      "download_aborts_total",
			Help:      "Downloads whose response was broken off because the CDN's bytes were incomplete, too many, corrupt or failed mid-body.",
		}, []string{"reason"})
	})
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{metrics.downloadAbort} {
		if err := reg.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			return err
		}
	}
	return nil
}
