#!/bin/sh
# Makes the format samples: small real files, from the encoders people
# use (ffmpeg, ImageMagick, cwebp and img2webp), that keep or break each
# of WhatsApp's delivery rules once (docs/meta.md, "What WhatsApp
# delivers"). internal/fixtures.FormatSamples says what each one is and
# which rule it breaks; TestFormatSamplesCurrent runs this script and
# checks that it still makes exactly those files, with those verdicts.
#
#	testdata/formats/make.sh [directory]   # default: this script's own
#
# Needs ffmpeg (with libx264, libx265, libopus, libvorbis), ImageMagick,
# cwebp and img2webp: on Debian, apt-get install ffmpeg imagemagick webp.
set -eu
dir=${1:-$(dirname "$0")}
mkdir -p "$dir"
cd "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ImageMagick 6's convert; the name that works on ImageMagick 7 too.
im=convert
command -v magick >/dev/null 2>&1 && im="magick"

ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }

# Images: "Images must be 8-bit, RGB or RGBA."
$im -size 32x32 gradient:red-blue -strip image-rgb.jpg
$im -size 32x32 gradient:red-blue -strip -colorspace CMYK image-cmyk.jpg
# No encoder here writes 12-bit JPEG (Debian's libjpeg-turbo is built for
# 8-bit samples): the 8-bit file's frame header is given precision 12.
python3 - image-rgb.jpg image-12bit.jpg <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
i = 2
while b[i + 1] not in (0xC0, 0xC1, 0xC2):
    i += 2 + int.from_bytes(b[i + 2:i + 4], "big")
b[i + 4] = 12
open(sys.argv[2], "wb").write(b)
PY
$im -size 32x32 gradient:red-blue -alpha set -channel A -evaluate set 50% +channel -strip PNG32:image-rgba.png
$im -size 32x32 gradient:red-blue -strip -depth 16 PNG48:image-16bit.png

# Stickers: WebP, 512×512, static at most 100 KB, animated at most 500 KB.
$im -size 512x512 gradient:yellow-green -strip "$tmp/a.png"
$im -size 512x512 gradient:green-blue -strip "$tmp/b.png"
$im -size 600x600 gradient:yellow-green -strip "$tmp/600.png"
$im -size 512x512 xc:gray +noise Random -strip "$tmp/noise.png"
cwebp -quiet -q 50 "$tmp/a.png" -o sticker.webp
cwebp -quiet -q 50 "$tmp/600.png" -o sticker-600.webp
cwebp -quiet -q 90 "$tmp/noise.png" -o sticker-static-large.webp
img2webp -loop 0 -lossy -q 50 -d 200 "$tmp/a.png" "$tmp/b.png" -o sticker-animated.webp >"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; exit 1; }

# Audio: "audio/ogg: OPUS codecs only", played as voice notes in mono.
tone="-f lavfi -i sine=frequency=440:duration=0.5"
ff $tone -ac 1 -c:a libopus -b:a 16k -fflags +bitexact voice.ogg
ff $tone -ac 2 -c:a libopus -b:a 24k -fflags +bitexact voice-stereo.ogg
ff $tone -ac 1 -c:a libvorbis -fflags +bitexact vorbis.ogg

# Video: "Only H.264 video codec and AAC audio codec supported. Single
# audio stream or no audio stream."
pic="-f lavfi -i testsrc=size=64x64:rate=10:duration=0.5"
bits="-fflags +bitexact -map_metadata -1"
ff $pic $tone -c:v libx264 -pix_fmt yuv420p -c:a aac -b:a 32k -shortest $bits -movflags +faststart h264-aac.mp4
ff $pic $tone -c:v libx264 -pix_fmt yuv420p -c:a aac -b:a 32k -shortest $bits h264-aac-moov-last.mp4
ff $pic -c:v libx264 -pix_fmt yuv420p $bits h264-silent.mp4
ff $pic $tone -c:v libx265 -x265-params log-level=none -pix_fmt yuv420p -tag:v hvc1 -c:a aac -b:a 32k -shortest $bits \
	-movflags +faststart hevc.mp4
ff $pic $tone -c:v libx265 -x265-params log-level=none -pix_fmt yuv420p -tag:v hvc1 -c:a aac -b:a 32k -shortest $bits \
	hevc-moov-last.mp4
ff $pic $tone -f lavfi -i sine=frequency=660:duration=0.5 -map 0:v -map 1:a -map 2:a \
	-c:v libx264 -pix_fmt yuv420p -c:a aac -b:a 32k -shortest $bits -movflags +faststart two-audio.mp4
ff $pic $tone -c:v libx264 -pix_fmt yuv420p -c:a ac3 -b:a 64k -shortest $bits -movflags +faststart h264-ac3.mp4
# MP3 in MP4 has an mp4a sample entry too: only its decoder configuration
# (esds) tells it from AAC.
ff $pic $tone -c:v libx264 -pix_fmt yuv420p -c:a libmp3lame -b:a 32k -shortest $bits -movflags +faststart h264-mp3.mp4
ff -f lavfi -i testsrc=size=176x144:rate=10:duration=0.5 $tone -c:v libx264 -pix_fmt yuv420p -c:a aac -b:a 32k \
	-shortest $bits -f 3gp h264-aac.3gp
ff -f lavfi -i testsrc=size=176x144:rate=10:duration=0.5 $tone -c:v h263 -c:a aac -b:a 32k -shortest $bits \
	-f 3gp h263.3gp
