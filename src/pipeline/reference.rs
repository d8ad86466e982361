//! Measurement tools shared by the scaler tests (CPU and CUDA), the GPU
//! self-test and `benches/scale.rs`: an f64 reference resampler, PSNR, and
//! test pictures. Not used by the pipeline itself.

use crate::pipeline::frame::{Picture, Plane};

/// Lanczos kernel with `a` lobes.
fn lanczos(x: f64, a: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else if x.abs() >= a {
        0.0
    } else {
        let px = std::f64::consts::PI * x;
        a * px.sin() * (px / a).sin() / (px * px)
    }
}

/// Weights of a 1-D anti-aliased Lanczos-3 resampling of `extent` source
/// samples (fractional for odd chroma) onto `dst` samples, centred
/// sample positions, kernel widened by the downscale factor, taps outside
/// the source dropped and the rest renormalised. `(first index, weights)`
/// per output sample.
fn weights(src_len: usize, extent: f64, dst: usize) -> Vec<(usize, Vec<f64>)> {
    let a = 3.0;
    let scale = extent / dst as f64;
    let widen = scale.max(1.0);
    let support = a * widen;
    (0..dst)
        .map(|i| {
            let centre = (i as f64 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0)) as usize;
            let hi = ((centre + support).ceil() as usize).min(src_len);
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| lanczos((j as f64 + 0.5 - centre) / widen, a))
                .collect();
            let sum: f64 = w.iter().sum();
            w.iter_mut().for_each(|v| *v /= sum);
            (lo, w)
        })
        .collect()
}

/// A plane resampled in f64 with Lanczos-3 to `dst_w` x `dst_h`, the
/// source extent being `extent` (its width and height, or half the luma
/// size for chroma). Unrounded, row-major, no padding.
pub fn lanczos3_plane(src: &Plane, extent: (f64, f64), dst_w: usize, dst_h: usize) -> Vec<f64> {
    let wx = weights(src.width, extent.0, dst_w);
    let wy = weights(src.height, extent.1, dst_h);
    let mut horiz = vec![0.0; dst_w * src.height];
    for y in 0..src.height {
        let row = src.row(y);
        for (x, (lo, w)) in wx.iter().enumerate() {
            horiz[y * dst_w + x] = w
                .iter()
                .enumerate()
                .map(|(k, c)| c * f64::from(row[lo + k]))
                .sum();
        }
    }
    let mut out = vec![0.0; dst_w * dst_h];
    for (y, (lo, w)) in wy.iter().enumerate() {
        for x in 0..dst_w {
            out[y * dst_w + x] = w
                .iter()
                .enumerate()
                .map(|(k, c)| c * horiz[(lo + k) * dst_w + x])
                .sum();
        }
    }
    out
}

/// The three planes of `src` resampled by [`lanczos3_plane`] to
/// `dst_w` x `dst_h` (even).
pub fn lanczos3(src: &Picture, dst_w: u32, dst_h: u32) -> [Vec<f64>; 3] {
    let (w, h) = (f64::from(src.width), f64::from(src.height));
    let (dw, dh) = (dst_w as usize, dst_h as usize);
    [
        lanczos3_plane(&src.planes[0], (w, h), dw, dh),
        lanczos3_plane(&src.planes[1], (w / 2.0, h / 2.0), dw / 2, dh / 2),
        lanczos3_plane(&src.planes[2], (w / 2.0, h / 2.0), dw / 2, dh / 2),
    ]
}

/// Mean squared error of a plane against a reference of its size,
/// leaving out `border` samples on each side (edge handling differs
/// between resamplers and is not what is being compared).
pub fn mse(plane: &Plane, reference: &[f64], border: usize) -> f64 {
    let (w, h) = (plane.width, plane.height);
    let (x0, y0) = (border.min(w / 2), border.min(h / 2));
    let (mut sum, mut n) = (0.0, 0usize);
    for y in y0..h - y0 {
        let row = plane.row(y);
        for x in x0..w - x0 {
            let d = f64::from(row[x]) - reference[y * w + x];
            sum += d * d;
            n += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// PSNR in dB for 8-bit samples from a mean squared error (capped at
/// 99 dB for identical pictures).
pub fn psnr(mse: f64) -> f64 {
    if mse <= 1e-10 {
        99.0
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

/// PSNR of each plane of `pic` against `reference`, border excluded.
pub fn psnr_planes(pic: &Picture, reference: &[Vec<f64>; 3], border: usize) -> [f64; 3] {
    [0, 1, 2].map(|i| psnr(mse(&pic.planes[i], &reference[i], border)))
}

/// A 4:2:0 picture from raw yuv420p bytes (no padding), or `None` if
/// `raw` is not exactly one frame of that size.
pub fn from_yuv420p(raw: &[u8], width: u32, height: u32) -> Option<Picture> {
    let mut pic = Picture::new(width, height);
    let mut at = 0;
    for plane in &mut pic.planes {
        for y in 0..plane.height {
            let row = raw.get(at..at + plane.width)?;
            plane.row_mut(y).copy_from_slice(row);
            at += plane.width;
        }
    }
    (at == raw.len()).then_some(pic)
}

/// One frame of an FFmpeg lavfi source (`testsrc2`, `mandelbrot`,
/// `cellauto`, ...) at `width` x `height`, or `None` without an `ffmpeg`
/// binary.
pub fn ffmpeg_frame(source: &str, width: u32, height: u32) -> Option<Picture> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!("{source}=size={width}x{height}"))
        .args([
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-",
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    from_yuv420p(&out.stdout, width, height)
}

/// A deterministic detailed picture without FFmpeg: smooth gradients,
/// sinusoids from low to near-Nyquist frequency, hard-edged blocks and
/// pseudo-random texture, in all three planes.
pub fn synthetic(width: u32, height: u32) -> Picture {
    let mut pic = Picture::new(width, height);
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for (i, plane) in pic.planes.iter_mut().enumerate() {
        let (w, h) = (plane.width as f64, plane.height as f64);
        let k = i as f64;
        for y in 0..plane.height {
            for x in 0..plane.width {
                let (fx, fy) = (x as f64 / w, y as f64 / h);
                // Chirp across x: frequency rises to ~0.3 cycles/sample.
                let chirp = (std::f64::consts::PI * 0.3 * w * fx * fx + k).sin();
                let waves = (fy * 40.0 + fx * 13.0 + k).sin();
                let block = if ((x / 37) + (y / 23)) % 2 == 0 {
                    30.0
                } else {
                    -30.0
                };
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let noise = (seed % 17) as f64 - 8.0;
                let v = 128.0 + 60.0 * fx - 30.0 * fy
                    + 25.0 * chirp * fy
                    + 15.0 * waves
                    + block
                    + noise;
                plane.row_mut(y)[x] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    pic
}
