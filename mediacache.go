package whatsappmedia

import (
	"context"
	"crypto/sha256"
	"errors"
	"time"

	"github.com/maypok86/otter/v2"
)

// Defaults of the media metadata cache.
const (
	DefaultMediaCacheTTL     = 4 * time.Minute
	DefaultMediaCacheEntries = 10_000
)

// mediaKey names Graph's answer about one media object for one caller:
// the account, its Meta token (hashed) and the media id. Another account
// or a rotated token asks Graph again.
type mediaKey struct {
	account string
	token   [sha256.Size]byte
	mediaID string
}

func newMediaKey(acct *Account, mediaID string) mediaKey {
	return mediaKey{account: acct.ID, token: tokenKey(acct.MetaToken), mediaID: mediaID}
}

// mediaCache holds Graph's media metadata (URL, type, sha256, size) for a
// fixed time from Graph's answer, never extended by use: less than the
// URL's own life (5 minutes), so that a cached URL is still valid, and a
// stale one is refreshed as a fresh one would be.
type mediaCache struct {
	c *otter.Cache[mediaKey, mediaMetadata]
}

// newMediaCache makes a cache of entries answers, each kept ttl on clock
// (nil: the real clock).
func newMediaCache(ttl time.Duration, entries int, clock otter.Clock) (*mediaCache, error) {
	c, err := otter.New(&otter.Options[mediaKey, mediaMetadata]{
		MaximumSize:      entries,
		ExpiryCalculator: otter.ExpiryWriting[mediaKey, mediaMetadata](ttl),
		Clock:            clock,
	})
	if err != nil {
		return nil, err
	}
	return &mediaCache{c: c}, nil
}

func (mc *mediaCache) stop() {
	mc.c.InvalidateAll()
	mc.c.StopAllGoroutines()
}

// lookupMedia returns the media's metadata from the cache, or asks Graph;
// concurrent misses for one key share one request, and a failed request
// is not cached. Without a cache it always asks Graph.
func (h *Handler) lookupMedia(ctx context.Context, acct *Account, mediaID string) (mediaMetadata, *apiError) {
	if h.mediaCache == nil {
		return h.graph.fetchMetadata(ctx, acct.MetaToken, mediaID)
	}
	key := newMediaKey(acct, mediaID)
	if info, ok := h.mediaCache.c.GetIfPresent(key); ok {
		metrics.mediaCacheHit.Inc()
		return info, nil
	}
	metrics.mediaCacheMiss.Inc()
	info, err := h.mediaCache.c.Get(ctx, key, otter.LoaderFunc[mediaKey, mediaMetadata](
		func(ctx context.Context, _ mediaKey) (mediaMetadata, error) {
			// Shared by every caller waiting for this key: one going away
			// must not fail it for the others.
			info, ae := h.graph.fetchMetadata(context.WithoutCancel(ctx), acct.MetaToken, mediaID)
			if ae != nil {
				return mediaMetadata{}, ae
			}
			return info, nil
		}))
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			return mediaMetadata{}, ae
		}
		return mediaMetadata{}, errUpstream.withCause(err)
	}
	return info, nil
}

// refreshMedia asks Graph again, for a URL the CDN no longer takes,
// and keeps the answer; a refusal forgets the media.
func (h *Handler) refreshMedia(ctx context.Context, acct *Account, mediaID string) (mediaMetadata, *apiError) {
	info, ae := h.graph.fetchMetadata(ctx, acct.MetaToken, mediaID)
	if h.mediaCache != nil {
		key := newMediaKey(acct, mediaID)
		if ae != nil {
			h.mediaCache.c.Invalidate(key)
		} else {
			h.mediaCache.c.Set(key, info)
		}
	}
	return info, ae
}

// forgetMedia drops the cached metadata of a media that Meta no longer
// serves.
func (h *Handler) forgetMedia(acct *Account, mediaID string) {
	if h.mediaCache != nil {
		h.mediaCache.c.Invalidate(newMediaKey(acct, mediaID))
	}
}
