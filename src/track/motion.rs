//! Where a tracked box is expected next: a constant-velocity Kalman filter on its centre and size.
//!
//! The state is (cx, cy, w, h) and their velocities. With process and measurement noise that are
//! diagonal per coordinate (as in SORT and ByteTrack), the 8-state filter splits exactly into four
//! independent filters of (position, velocity), which [`Axis`] implements in closed form. The
//! noise scales with the box: horizontal coordinates with its width, vertical ones with its height.

/// Standard deviations relative to the box size (the values ByteTrack uses).
const POS_STD: f32 = 1.0 / 20.0;
const VEL_STD: f32 = 1.0 / 160.0;

/// One coordinate and its velocity, with their 2×2 covariance.
#[derive(Clone, Copy, Debug)]
struct Axis {
    pos: f32,
    vel: f32,
    /// Covariance (pos-pos, pos-vel, vel-vel).
    p00: f32,
    p01: f32,
    p11: f32,
}

impl Axis {
    fn new(pos: f32, scale: f32) -> Self {
        let sp = 2.0 * POS_STD * scale;
        let sv = 10.0 * VEL_STD * scale;
        Axis {
            pos,
            vel: 0.0,
            p00: sp * sp,
            p01: 0.0,
            p11: sv * sv,
        }
    }

    /// One frame ahead: pos += vel, P = F P Fᵀ + Q.
    fn predict(&mut self, scale: f32) {
        let qp = POS_STD * scale;
        let qv = VEL_STD * scale;
        self.pos += self.vel;
        self.p00 += 2.0 * self.p01 + self.p11 + qp * qp;
        self.p01 += self.p11;
        self.p11 += qv * qv;
    }

    /// Folds in a measured position.
    fn update(&mut self, measured: f32, scale: f32) {
        let r = POS_STD * scale;
        let s = self.p00 + r * r;
        let (k0, k1) = (self.p00 / s, self.p01 / s);
        let innovation = measured - self.pos;
        self.pos += k0 * innovation;
        self.vel += k1 * innovation;
        self.p11 -= k1 * self.p01;
        self.p01 *= 1.0 - k0;
        self.p00 *= 1.0 - k0;
    }
}

/// A box's expected motion; boxes are (x0, y0, x1, y1).
#[derive(Clone, Debug)]
pub struct BoxMotion {
    /// cx, cy, w, h.
    axes: [Axis; 4],
}

/// Smallest side a predicted box keeps, in pixels.
const MIN_SIDE: f32 = 1.0;

impl BoxMotion {
    pub fn new(bbox: &[f32; 4]) -> Self {
        let [cx, cy, w, h] = centre_size(bbox);
        BoxMotion {
            axes: [
                Axis::new(cx, w),
                Axis::new(cy, h),
                Axis::new(w, w),
                Axis::new(h, h),
            ],
        }
    }

    /// Advances the state one frame.
    pub fn predict(&mut self) {
        let (w, h) = self.size();
        for (axis, scale) in self.axes.iter_mut().zip([w, h, w, h]) {
            axis.predict(scale);
        }
        // A shrinking box does not turn inside out: its size stops at the minimum.
        for a in &mut self.axes[2..] {
            if a.pos < MIN_SIDE {
                a.pos = MIN_SIDE;
                a.vel = 0.0;
            }
        }
    }

    /// Folds in the box a detection measured.
    pub fn update(&mut self, bbox: &[f32; 4]) {
        let measured = centre_size(bbox);
        let (w, h) = (measured[2], measured[3]);
        for ((axis, m), scale) in self.axes.iter_mut().zip(measured).zip([w, h, w, h]) {
            axis.update(m, scale);
        }
    }

    /// The expected box now.
    pub fn bbox(&self) -> [f32; 4] {
        let [cx, cy, w, h] = self.axes.map(|a| a.pos);
        let (w, h) = (w.max(MIN_SIDE), h.max(MIN_SIDE));
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }

    /// Velocity of the centre, pixels per frame.
    pub fn velocity(&self) -> (f32, f32) {
        (self.axes[0].vel, self.axes[1].vel)
    }

    fn size(&self) -> (f32, f32) {
        (
            self.axes[2].pos.max(MIN_SIDE),
            self.axes[3].pos.max(MIN_SIDE),
        )
    }
}

fn centre_size(b: &[f32; 4]) -> [f32; 4] {
    let w = (b[2] - b[0]).max(MIN_SIDE);
    let h = (b[3] - b[1]).max(MIN_SIDE);
    [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, w, h]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(x: f32, y: f32) -> [f32; 4] {
        [x, y, x + 40.0, y + 80.0]
    }

    #[test]
    fn learns_a_constant_velocity() {
        let mut m = BoxMotion::new(&at(0.0, 0.0));
        for t in 1..20 {
            m.predict();
            m.update(&at(3.0 * t as f32, -2.0 * t as f32));
        }
        let (vx, vy) = m.velocity();
        assert!((vx - 3.0).abs() < 0.2, "vx {vx}");
        assert!((vy + 2.0).abs() < 0.2, "vy {vy}");
        m.predict();
        let b = m.bbox();
        assert!(
            (b[0] - 60.0).abs() < 2.0 && (b[1] + 40.0).abs() < 2.0,
            "{b:?}"
        );
        assert!((b[2] - b[0] - 40.0).abs() < 1.0 && (b[3] - b[1] - 80.0).abs() < 1.0);
    }

    #[test]
    fn a_still_box_stays_put_and_a_shrinking_one_stops_at_the_minimum() {
        let mut m = BoxMotion::new(&at(10.0, 10.0));
        for _ in 0..5 {
            m.predict();
            m.update(&at(10.0, 10.0));
        }
        let b = m.bbox();
        assert!(b
            .iter()
            .zip(at(10.0, 10.0))
            .all(|(a, e)| (a - e).abs() < 1e-3));

        let mut s = BoxMotion::new(&[0.0, 0.0, 40.0, 40.0]);
        for t in 1..8 {
            let side = 40.0 - 5.0 * t as f32;
            s.predict();
            s.update(&[0.0, 0.0, side, side]);
        }
        for _ in 0..50 {
            s.predict();
        }
        let b = s.bbox();
        assert!(b[2] - b[0] >= MIN_SIDE && b[3] - b[1] >= MIN_SIDE, "{b:?}");
        assert!(b.iter().all(|v| v.is_finite()));
    }
}
