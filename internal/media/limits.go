package media

// ceilings are Meta's per-type size ceilings, read in MiB (the more
// permissive reading of Meta's "MB"): images 5, audio and video 16,
// documents 100, stickers (image/webp) 500 KiB, the animated sticker's
// ceiling (a static one's is 100 KB).
var ceilings = map[string]int64{
	"audio/aac": 16 << 20, "audio/amr": 16 << 20, "audio/mpeg": 16 << 20, "audio/mp4": 16 << 20,
	"audio/ogg": 16 << 20, "audio/opus": 16 << 20,
	"text/plain": 100 << 20, "application/pdf": 100 << 20, "application/msword": 100 << 20,
	"application/vnd.ms-excel": 100 << 20, "application/vnd.ms-powerpoint": 100 << 20,
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   100 << 20,
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         100 << 20,
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": 100 << 20,
	"image/jpeg": 5 << 20, "image/png": 5 << 20, "image/webp": 500 << 10,
	"video/mp4": 16 << 20, "video/3gpp": 16 << 20, "video/3gp": 16 << 20,
}

// Ceiling returns Meta's size ceiling for files of type t, or 0 when t is
// not a type WhatsApp accepts.
func Ceiling(t string) int64 { return ceilings[t] }
