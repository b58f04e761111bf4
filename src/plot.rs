//! Pictures of samples: a 2-D scatter plot as a gray image (written as PNG by `data::images`).

/// A 2-D scatter plot of points as one gray image (dark points on white), `side` pixels square,
/// covering [-extent, extent]².
pub fn scatter_image(points: &[f32], extent: f32, side: usize) -> Vec<f32> {
    let mut img = vec![1.0f32; side * side];
    for p in points.chunks_exact(2) {
        let u = ((p[0] / extent + 1.0) * 0.5 * side as f32).floor();
        let v = ((1.0 - (p[1] / extent + 1.0) * 0.5) * side as f32).floor();
        if u >= 0.0 && v >= 0.0 && (u as usize) < side && (v as usize) < side {
            img[v as usize * side + u as usize] = -1.0;
        }
    }
    img
}
