//! Procedural product pictures: a small signed-distance-field rasteriser.
//!
//! A product is a list of parts (sleeves, body, lapels, buttons, handle, sole, ...), each a
//! shape with a signed distance function and a surface. Each pixel starts as a studio
//! backdrop with a soft floor shadow, then each part is blended over it with coverage
//! `clamp(0.5 - d / pixel, 0, 1)`, which anti-aliases every edge without supersampling.
//!
//! What the picture shows is what the title says:
//! - kind: the silhouette (coat with lapels, belt and buttons; bag with handle, flap and
//!   clasp; scarf with fringes; shirt with collar and placket; a pair of shoes);
//! - colour: the base colour of the fabric;
//! - pattern: a check (dark bands, light and accent lines both ways), stripes, or plain;
//! - material: the texture (wool grain, cashmere softness, cotton or canvas weave, silk sheen,
//!   leather highlight, suede nap);
//! - size: the bag's extent in the frame, the coat's length.

use image::RgbImage;

use super::spec::{Kind, Material, Pattern, ProductSpec, Size};

pub(super) type V2 = [f32; 2];

fn sub(a: V2, b: V2) -> V2 {
    [a[0] - b[0], a[1] - b[1]]
}

fn dot(a: V2, b: V2) -> f32 {
    a[0] * b[0] + a[1] * b[1]
}

fn len(a: V2) -> f32 {
    dot(a, a).sqrt()
}

fn mix3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn scale3(a: [f32; 3], s: f32) -> [f32; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

/// A shape with a signed distance (negative inside), in image fractions.
#[derive(Debug, Clone)]
pub(super) enum Shape {
    Circle {
        c: V2,
        r: f32,
    },
    /// A segment thickened by `r` (sleeves, laces).
    Capsule {
        a: V2,
        b: V2,
        r: f32,
    },
    RoundRect {
        c: V2,
        half: V2,
        r: f32,
    },
    /// A polygon with its corners rounded by `round`.
    Polygon {
        points: Vec<V2>,
        round: f32,
    },
    /// A circle outline of thickness `2 t` (bag handles).
    Ring {
        c: V2,
        r: f32,
        t: f32,
    },
}

impl Shape {
    pub(super) fn sdf(&self, p: V2) -> f32 {
        match self {
            Shape::Circle { c, r } => len(sub(p, *c)) - r,
            Shape::Capsule { a, b, r } => {
                let pa = sub(p, *a);
                let ba = sub(*b, *a);
                let h = (dot(pa, ba) / dot(ba, ba)).clamp(0.0, 1.0);
                len([pa[0] - ba[0] * h, pa[1] - ba[1] * h]) - r
            }
            Shape::RoundRect { c, half, r } => {
                let q = [
                    (p[0] - c[0]).abs() - half[0] + r,
                    (p[1] - c[1]).abs() - half[1] + r,
                ];
                len([q[0].max(0.0), q[1].max(0.0)]) + q[0].max(q[1]).min(0.0) - r
            }
            Shape::Polygon { points, round } => sd_polygon(p, points) - round,
            Shape::Ring { c, r, t } => (len(sub(p, *c)) - r).abs() - t,
        }
    }

    /// Bounding box `(min, max)`, for skipping parts far from a pixel.
    pub(super) fn bounds(&self) -> (V2, V2) {
        match self {
            Shape::Circle { c, r } | Shape::Ring { c, r, .. } => {
                let r = r + if let Shape::Ring { t, .. } = self {
                    *t
                } else {
                    0.0
                };
                ([c[0] - r, c[1] - r], [c[0] + r, c[1] + r])
            }
            Shape::Capsule { a, b, r } => (
                [a[0].min(b[0]) - r, a[1].min(b[1]) - r],
                [a[0].max(b[0]) + r, a[1].max(b[1]) + r],
            ),
            Shape::RoundRect { c, half, .. } => (
                [c[0] - half[0], c[1] - half[1]],
                [c[0] + half[0], c[1] + half[1]],
            ),
            Shape::Polygon { points, round } => {
                let mut lo = [f32::MAX; 2];
                let mut hi = [f32::MIN; 2];
                for p in points {
                    for k in 0..2 {
                        lo[k] = lo[k].min(p[k] - round);
                        hi[k] = hi[k].max(p[k] + round);
                    }
                }
                (lo, hi)
            }
        }
    }
}

/// Inigo Quilez's exact signed distance to a polygon.
fn sd_polygon(p: V2, v: &[V2]) -> f32 {
    let n = v.len();
    let mut d = dot(sub(p, v[0]), sub(p, v[0]));
    let mut s = 1.0f32;
    let mut j = n - 1;
    for i in 0..n {
        let e = sub(v[j], v[i]);
        let w = sub(p, v[i]);
        let h = (dot(w, e) / dot(e, e)).clamp(0.0, 1.0);
        let b = [w[0] - e[0] * h, w[1] - e[1] * h];
        d = d.min(dot(b, b));
        let c = [p[1] >= v[i][1], p[1] < v[j][1], e[0] * w[1] > e[1] * w[0]];
        if (c[0] && c[1] && c[2]) || (!c[0] && !c[1] && !c[2]) {
            s = -s;
        }
        j = i;
    }
    s * d.sqrt()
}

/// How a part is coloured.
#[derive(Debug, Clone)]
enum Surface {
    /// The product's fabric: colour, pattern and material texture, times a shade.
    Fabric(f32),
    /// The product's colour and material without the pattern (trims, handles), times a shade.
    Tinted(f32),
    /// A fixed colour (buttons, soles, buckles, linings).
    Solid([f32; 3]),
    /// Scarf fringe: threads of the base colour across `axis` (a unit vector).
    Fringe { axis: V2 },
}

#[derive(Debug, Clone)]
struct Part {
    shape: Shape,
    surface: Surface,
    lo: V2,
    hi: V2,
}

fn part(shape: Shape, surface: Surface) -> Part {
    let (lo, hi) = shape.bounds();
    Part {
        shape,
        surface,
        lo,
        hi,
    }
}

fn poly(points: &[V2], round: f32) -> Shape {
    Shape::Polygon {
        points: points.to_vec(),
        round,
    }
}

/// Mirrors a point about the vertical centre line.
fn mirror(p: V2) -> V2 {
    [1.0 - p[0], p[1]]
}

fn mirror_all(points: &[V2]) -> Vec<V2> {
    points.iter().rev().map(|p| mirror(*p)).collect()
}

/// The parts of a product, in drawing order (back to front), in a frame where the product
/// is centred at (0.5, 0.5) and the image is the unit square.
fn layout(spec: &ProductSpec) -> Vec<Part> {
    let mut parts = Vec::new();
    match spec.kind {
        Kind::Coat => {
            let l = if spec.size == Size::Long { 0.66 } else { 0.48 };
            let y0 = 0.5 - (l + 0.04) / 2.0;
            for side in [-1.0f32, 1.0] {
                parts.push(part(
                    Shape::Capsule {
                        a: [0.5 + side * 0.16, y0 + 0.04],
                        b: [0.5 + side * 0.27, y0 + 0.04 + 0.55 * l],
                        r: 0.055,
                    },
                    Surface::Fabric(0.88),
                ));
            }
            parts.push(part(
                poly(
                    &[[0.33, y0], [0.67, y0], [0.735, y0 + l], [0.265, y0 + l]],
                    0.012,
                ),
                Surface::Fabric(1.0),
            ));
            parts.push(part(
                poly(
                    &[[0.45, y0 - 0.005], [0.55, y0 - 0.005], [0.5, y0 + 0.11]],
                    0.0,
                ),
                Surface::Solid([0.22, 0.19, 0.17]),
            ));
            let lapel = [[0.43, y0], [0.5, y0 + 0.17], [0.39, y0 + 0.1]];
            parts.push(part(poly(&lapel, 0.004), Surface::Fabric(0.78)));
            parts.push(part(
                poly(&mirror_all(&lapel), 0.004),
                Surface::Fabric(0.78),
            ));
            let belt_y = y0 + 0.36 * l;
            let belt_half = 0.17 + 0.065 * 0.36 + 0.004;
            parts.push(part(
                Shape::RoundRect {
                    c: [0.5, belt_y],
                    half: [belt_half, 0.019],
                    r: 0.004,
                },
                Surface::Tinted(0.8),
            ));
            parts.push(part(
                Shape::RoundRect {
                    c: [0.5, belt_y],
                    half: [0.028, 0.024],
                    r: 0.006,
                },
                Surface::Solid([0.16, 0.12, 0.09]),
            ));
            let buttons = if spec.size == Size::Long { 4 } else { 2 };
            for k in 0..buttons {
                for x in [0.455, 0.545] {
                    parts.push(part(
                        Shape::Circle {
                            c: [x, belt_y + 0.065 + 0.07 * k as f32],
                            r: 0.013,
                        },
                        Surface::Solid([0.17, 0.12, 0.09]),
                    ));
                }
            }
        }
        Kind::Bag => {
            let w = match spec.size {
                Size::Small => 0.42,
                Size::Large => 0.74,
                _ => 0.57,
            };
            let h = 0.6 * w;
            let cy = 0.5 + 0.13 * w;
            let top = cy - h / 2.0;
            parts.push(part(
                Shape::Ring {
                    c: [0.5, top],
                    r: 0.26 * w,
                    t: 0.018,
                },
                Surface::Tinted(0.7),
            ));
            parts.push(part(
                Shape::RoundRect {
                    c: [0.5, cy],
                    half: [w / 2.0, h / 2.0],
                    r: 0.03,
                },
                Surface::Fabric(1.0),
            ));
            let (l, r) = (0.5 - w / 2.0, 0.5 + w / 2.0);
            parts.push(part(
                poly(
                    &[
                        [l, top],
                        [r, top],
                        [r, top + 0.38 * h],
                        [0.5, top + 0.52 * h],
                        [l, top + 0.38 * h],
                    ],
                    0.006,
                ),
                Surface::Fabric(0.86),
            ));
            parts.push(part(
                Shape::RoundRect {
                    c: [0.5, top + 0.5 * h],
                    half: [0.024, 0.016],
                    r: 0.005,
                },
                Surface::Solid([0.86, 0.7, 0.32]),
            ));
        }
        Kind::Scarf => {
            let angle = -0.2f32;
            let (s, c) = angle.sin_cos();
            let axis_u = [c, s];
            let axis_v = [-s, c];
            let at = |u: f32, v: f32| -> V2 {
                [
                    0.5 + u * axis_u[0] + v * axis_v[0],
                    0.5 + u * axis_u[1] + v * axis_v[1],
                ]
            };
            let (hw, hl) = (0.15, 0.34);
            let rect = |v0: f32, v1: f32| -> Vec<V2> {
                vec![at(-hw, v0), at(hw, v0), at(hw, v1), at(-hw, v1)]
            };
            parts.push(part(
                poly(&rect(-hl - 0.055, hl + 0.055), 0.0),
                Surface::Fringe { axis: axis_u },
            ));
            parts.push(part(poly(&rect(-hl, hl), 0.004), Surface::Fabric(1.0)));
            // The fold: a slightly darker lower half.
            parts.push(part(poly(&rect(0.0, hl), 0.004), Surface::Fabric(0.93)));
        }
        Kind::Shirt => {
            for side in [-1.0f32, 1.0] {
                parts.push(part(
                    Shape::Capsule {
                        a: [0.5 + side * 0.16, 0.25],
                        b: [0.5 + side * 0.33, 0.55],
                        r: 0.06,
                    },
                    Surface::Fabric(0.9),
                ));
            }
            parts.push(part(
                poly(
                    &[[0.33, 0.2], [0.67, 0.2], [0.68, 0.84], [0.32, 0.84]],
                    0.01,
                ),
                Surface::Fabric(1.0),
            ));
            parts.push(part(
                poly(&[[0.45, 0.195], [0.55, 0.195], [0.5, 0.25]], 0.0),
                Surface::Solid([0.2, 0.2, 0.22]),
            ));
            let collar = [[0.44, 0.185], [0.5, 0.245], [0.5, 0.29], [0.405, 0.25]];
            parts.push(part(poly(&collar, 0.004), Surface::Tinted(1.08)));
            parts.push(part(
                poly(&mirror_all(&collar), 0.004),
                Surface::Tinted(1.08),
            ));
            parts.push(part(
                Shape::RoundRect {
                    c: [0.5, 0.565],
                    half: [0.013, 0.275],
                    r: 0.003,
                },
                Surface::Tinted(0.92),
            ));
            for k in 0..5 {
                parts.push(part(
                    Shape::Circle {
                        c: [0.5, 0.33 + 0.11 * k as f32],
                        r: 0.009,
                    },
                    Surface::Solid([0.94, 0.93, 0.89]),
                ));
            }
        }
        Kind::Shoes => {
            let (sole, lace) = match spec.material {
                Material::Suede => ([0.93, 0.91, 0.86], [0.95, 0.95, 0.93]),
                _ => ([0.2, 0.15, 0.11], [0.12, 0.11, 0.1]),
            };
            for (dx, dy, shade) in [(0.05f32, -0.08f32, 0.78f32), (0.0, 0.0, 1.0)] {
                let at = |x: f32, y: f32| -> V2 { [x + dx - 0.02, y + dy + 0.02] };
                let upper: Vec<V2> = [
                    (0.17, 0.68),
                    (0.17, 0.52),
                    (0.2, 0.44),
                    (0.27, 0.45),
                    (0.35, 0.5),
                    (0.41, 0.46),
                    (0.5, 0.5),
                    (0.64, 0.55),
                    (0.76, 0.59),
                    (0.83, 0.64),
                    (0.84, 0.68),
                ]
                .iter()
                .map(|&(x, y)| at(x, y))
                .collect();
                parts.push(part(poly(&upper, 0.014), Surface::Fabric(shade)));
                parts.push(part(
                    Shape::RoundRect {
                        c: at(0.505, 0.7),
                        half: [0.335, 0.026],
                        r: 0.016,
                    },
                    Surface::Solid(scale3(sole, shade)),
                ));
                for k in 0..3 {
                    let x = 0.44 + 0.055 * k as f32;
                    let y = 0.49 + 0.022 * k as f32;
                    parts.push(part(
                        Shape::Capsule {
                            a: at(x, y),
                            b: at(x + 0.03, y + 0.035),
                            r: 0.006,
                        },
                        Surface::Solid(scale3(lace, shade)),
                    ));
                }
            }
        }
    }
    parts
}

/// A hash of integer coordinates to `[-1, 1]`.
fn hash_noise(x: i32, y: i32, seed: u32) -> f32 {
    let mut h = (x as u32).wrapping_mul(0x8da6_b343)
        ^ (y as u32).wrapping_mul(0xd816_3841)
        ^ seed.wrapping_mul(0xcb1a_b31f);
    h ^= h >> 13;
    h = h.wrapping_mul(0x5bd1_e995);
    h ^= h >> 15;
    (h & 0xffff) as f32 / 32767.5 - 1.0
}

/// Bilinear value noise with cells of `cell` pixels, in `[-1, 1]`.
fn value_noise(x: f32, y: f32, cell: f32, seed: u32) -> f32 {
    let (fx, fy) = (x / cell, y / cell);
    let (ix, iy) = (fx.floor() as i32, fy.floor() as i32);
    let (tx, ty) = (fx - ix as f32, fy - iy as f32);
    let n = |dx, dy| hash_noise(ix + dx, iy + dy, seed);
    let top = n(0, 0) + (n(1, 0) - n(0, 0)) * tx;
    let bottom = n(0, 1) + (n(1, 1) - n(0, 1)) * tx;
    top + (bottom - top) * ty
}

fn luminance(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// The pattern's colour at `q` (product frame).
fn pattern_colour(spec: &ProductSpec, q: V2) -> [f32; 3] {
    let base = spec.colour.rgb;
    let light = luminance(base) > 0.45;
    match spec.pattern {
        Pattern::Plain => base,
        Pattern::Check => {
            let dark = if light {
                [0.1, 0.09, 0.08]
            } else {
                scale3(base, 0.35)
            };
            let cream = [0.96, 0.94, 0.88];
            let accent = if spec.colour.name == "Red" {
                [0.08, 0.08, 0.08]
            } else {
                [0.72, 0.1, 0.12]
            };
            let band = |t: f32| -> Option<[f32; 3]> {
                let f = (t / 0.14).rem_euclid(1.0);
                if f < 0.2 {
                    Some(dark)
                } else if (0.44..0.52).contains(&f) {
                    Some(cream)
                } else if (0.7..0.76).contains(&f) {
                    Some(accent)
                } else {
                    None
                }
            };
            let mut c = base;
            if let Some(v) = band(q[0]) {
                c = mix3(c, v, 0.72);
            }
            if let Some(h) = band(q[1]) {
                c = mix3(c, h, 0.72);
            }
            c
        }
        Pattern::Striped => {
            let t = if spec.kind == Kind::Scarf { q[1] } else { q[0] };
            let stripe = if light {
                [0.12, 0.14, 0.26]
            } else {
                [0.94, 0.92, 0.86]
            };
            if (t / 0.09).rem_euclid(1.0) < 0.34 {
                stripe
            } else {
                base
            }
        }
    }
}

/// Brightness factor and additive highlight of the material at pixel `(px, py)`.
fn material(spec: &ProductSpec, q: V2, px: f32, py: f32, centre: V2) -> (f32, f32) {
    let seed = spec.texture_seed;
    let (ix, iy) = (px as i32, py as i32);
    match spec.material {
        Material::Wool => (1.0 + 0.07 * hash_noise(ix, iy, seed), 0.0),
        Material::Cashmere => (1.03 + 0.035 * value_noise(px, py, 3.0, seed), 0.0),
        Material::Cotton => (
            1.0 + 0.03 * if (ix + iy) % 2 == 0 { 1.0 } else { -1.0 },
            0.0,
        ),
        Material::Canvas => (
            1.0 + 0.055
                * if (ix / 2 + iy / 2) % 2 == 0 {
                    1.0
                } else {
                    -1.0
                },
            0.0,
        ),
        Material::Silk => (1.0 + 0.14 * ((q[0] + q[1]) * 22.0).sin(), 0.0),
        Material::Leather => {
            let hl = sub(q, [centre[0] - 0.09, centre[1] - 0.1]);
            (
                1.0 + 0.02 * hash_noise(ix, iy, seed),
                0.32 * (-dot(hl, hl) / 0.008).exp(),
            )
        }
        Material::Suede => (0.92 + 0.08 * value_noise(px, py, 1.5, seed), 0.0),
    }
}

/// Draws the product photo of `spec`, `size` pixels square.
pub fn render(spec: &ProductSpec, size: u32) -> RgbImage {
    let parts = layout(spec);
    let (mut lo, mut hi) = ([f32::MAX; 2], [f32::MIN; 2]);
    for p in &parts {
        for k in 0..2 {
            lo[k] = lo[k].min(p.lo[k]);
            hi[k] = hi[k].max(p.hi[k]);
        }
    }
    let centre = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
    let shadow_half_w = (hi[0] - lo[0]) / 2.0;
    let px = 1.0 / size as f32;
    // Pixel (in image fractions) -> product frame.
    let to_frame = |p: V2| -> V2 {
        [
            (p[0] - 0.5 - spec.offset[0]) / spec.scale + 0.5,
            (p[1] - 0.5 - spec.offset[1]) / spec.scale + 0.5,
        ]
    };
    let px_frame = px / spec.scale;
    RgbImage::from_fn(size, size, |x, y| {
        let p = [(x as f32 + 0.5) * px, (y as f32 + 0.5) * px];
        let q = to_frame(p);
        // Studio backdrop: lighter at the top, warm white.
        let b = 0.965 - 0.06 * p[1] + spec.backdrop;
        let mut col = [b, b * 0.995, b * 0.985];
        // Soft floor shadow under the product.
        let sx = (q[0] - centre[0]) / (shadow_half_w * 0.9);
        let sy = (q[1] - hi[1] - 0.01) / 0.035;
        col = scale3(col, 1.0 - 0.22 * (-(sx * sx + sy * sy)).exp());
        for part in &parts {
            if q[0] < part.lo[0] - px_frame
                || q[1] < part.lo[1] - px_frame
                || q[0] > part.hi[0] + px_frame
                || q[1] > part.hi[1] + px_frame
            {
                continue;
            }
            let d = part.shape.sdf(q);
            let mut coverage = (0.5 - d / px_frame).clamp(0.0, 1.0);
            if coverage <= 0.0 {
                continue;
            }
            // Darker towards the edges: a cheap impression of volume.
            let edge = 0.8 + 0.2 * (-d / 0.03).clamp(0.0, 1.0);
            let (m, highlight) = material(spec, q, x as f32, y as f32, centre);
            let lit = |c: [f32; 3]| c.map(|v| v + highlight);
            let c = match &part.surface {
                Surface::Fabric(shade) => lit(scale3(pattern_colour(spec, q), shade * edge * m)),
                Surface::Tinted(shade) => lit(scale3(spec.colour.rgb, shade * edge * m)),
                Surface::Solid(c) => scale3(*c, edge),
                Surface::Fringe { axis } => {
                    let u = dot(sub(q, [0.5, 0.5]), *axis);
                    if (u / 0.02).rem_euclid(1.0) > 0.55 {
                        coverage = 0.0;
                    }
                    scale3(spec.colour.rgb, 0.9 * m)
                }
            };
            col = mix3(col, c, coverage);
        }
        image::Rgb(col.map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8))
    })
}
