"""Sample-quality metrics computed from image features, in float64: FID, KID, precision/recall, Inception Score; and
the fidelity of an upscaler's images to the originals, from their pixels: PSNR, SSIM.

Every feature metric takes feature matrices of shape (N, D) (one row per image, from `features.py`), every pixel
metric two image batches of shape (N, C, H, W); each implements one paper's equation, quoted in its docstring.
Numbers are only comparable when the features came from the same extractor, image count, resolution and sampler;
`evaluate.py` records all four beside every result.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.ndimage
import scipy.spatial

# Rows of a distance matrix computed at once: memory stays ~100 MB however many images are compared.
_CHUNK = 2048


def _as_float64(features, name: str = "features") -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or len(array) == 0:
        raise ValueError(f"{name} must be a non-empty (N, D) matrix, got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} hold non-finite values.")
    return array


def gaussian_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (divided by N - 1) of the rows of `features`, in float64."""
    features = _as_float64(features)
    if len(features) < 2:
        raise ValueError("A covariance needs at least 2 feature vectors.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017, eq. 6).

        d² = |mu1 - mu2|² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

    The matrix square root comes from `scipy.linalg.sqrtm`; when the product is nearly singular (fewer images
    than dimensions, or constant features) a small multiple of the identity is added to both covariances first,
    as pytorch-fid does, and the tiny imaginary part that rounding leaves is dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"Statistics of different dimensions: {mu1.shape} and {mu2.shape}.")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * 1e-6
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(max(distance, 0.0))  # rounding can leave -1e-12 for identical sets


def fid(features_a, features_b) -> float:
    """Fréchet Inception Distance between two feature sets (Heusel et al. 2017): eq. 6 on their Gaussian fits.

    FID = |mu_a - mu_b|² + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)),   mu, S = mean and covariance of the features
    """
    return frechet_distance(*gaussian_statistics(features_a), *gaussian_statistics(features_b))


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x·y / d + 1)³, the kernel of KID (Bińkowski et al. 2018, section 2.3)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimator of MMD² (Gretton et al. 2012, eq. 3; Bińkowski et al. 2018, eq. 1).

    MMD²_u = 1/(m(m-1)) Σ_{i≠j} k(x_i, x_j) + 1/(n(n-1)) Σ_{i≠j} k(y_i, y_j) - 2/(mn) Σ_{i,j} k(x_i, y_j)
    """
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float(
        (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
        + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
        - 2.0 * k_xy.mean()
    )


def kid(
    features_a, features_b, *, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with k(x, y) = (x·y/d + 1)³.

    The estimate is averaged over `num_subsets` random subsets of `min(subset_size, N_a, N_b)` rows of each set, as
    in the paper's code and torchmetrics; returns (mean, standard deviation over subsets). Unlike FID it is unbiased,
    so it is ~0 for two samples of one distribution at any image count, and can be slightly negative.
    """
    a, b = _as_float64(features_a, "features_a"), _as_float64(features_b, "features_b")
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError(f"KID needs at least 2 images in each set, got {len(a)} and {len(b)}.")
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def _knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    # Distance from each point to its k-th nearest neighbour in its own set (itself, at distance 0, not counted).
    return np.concatenate(
        [
            np.partition(scipy.spatial.distance.cdist(features[i : i + _CHUNK], features), k, axis=1)[:, k]
            for i in range(0, len(features), _CHUNK)
        ]
    )


def _inside_manifold(points: np.ndarray, manifold: np.ndarray, radii: np.ndarray) -> np.ndarray:
    # A point is on the manifold if it falls inside the k-NN ball of at least one manifold point.
    return np.concatenate(
        [
            (scipy.spatial.distance.cdist(points[i : i + _CHUNK], manifold) <= radii[None, :]).any(axis=1)
            for i in range(0, len(points), _CHUNK)
        ]
    )


def precision_recall(real_features, fake_features, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019, eq. 1-2), with k-NN balls as manifolds.

        f(x, Φ) = 1 if |x - φ| <= |φ - NN_k(φ, Φ)| for some φ in Φ, else 0
        precision = mean over generated x of f(x, Φ_real),   recall = mean over real x of f(x, Φ_generated)

    Precision is the share of samples that look like real data; recall the share of real data the samples cover.
    """
    real, fake = _as_float64(real_features, "real_features"), _as_float64(fake_features, "fake_features")
    if min(len(real), len(fake)) <= k:
        raise ValueError(
            f"Precision/recall with k={k} needs more than {k} images per set, got {len(real)} and {len(fake)}."
        )
    precision = _inside_manifold(fake, real, _knn_radii(real, k)).mean()
    recall = _inside_manifold(real, fake, _knn_radii(fake, k)).mean()
    return float(precision), float(recall)


def inception_score(probabilities, *, num_splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), mean and std over `num_splits` splits.

    `probabilities` are class probabilities p(y|x) of a classifier, one row per image. Only a score from the FID
    Inception-v3 network is comparable with papers; from another classifier (EfficientNet-Lite0) it is a relative
    number for comparing runs measured the same way.
    """
    p = _as_float64(probabilities, "probabilities")
    splits = [s for s in np.array_split(p, min(num_splits, len(p))) if len(s)]
    scores = []
    for part in splits:
        marginal = part.mean(axis=0, keepdims=True)
        kl = (part * (np.log(np.clip(part, 1e-12, None)) - np.log(np.clip(marginal, 1e-12, None)))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def _image_pairs(images, originals) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(images, dtype=np.float64), np.asarray(originals, dtype=np.float64)
    if a.ndim != 4 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"Expected two non-empty image batches (N, C, H, W) of one shape, got {a.shape}, {b.shape}.")
    return a, b


def psnr(images, originals, data_range: float = 255.0) -> np.ndarray:
    """Peak signal-to-noise ratio of each image against its original, in dB: 10 log10(range² / MSE).

    Per image (N,), as SR3 reports its mean (Saharia et al. 2021, Table 2); identical images give +inf.
    """
    a, b = _image_pairs(images, originals)
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / mse)


def ssim(images, originals, data_range: float = 255.0) -> np.ndarray:
    """Structural similarity of each image to its original (Wang et al. 2004, eq. 13), per image (N,).

        SSIM(x, y) = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x² + mu_y² + C1)(sigma_x² + sigma_y² + C2))

    with local statistics under an 11x11 Gaussian window of sigma 1.5 and C1 = (0.01 L)², C2 = (0.03 L)² (the
    paper's settings); the map is averaged over each channel and over the pixels whose window lies inside the image,
    as scikit-image's `structural_similarity(gaussian_weights=True)` does.
    """
    a, b = _image_pairs(images, originals)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def local_mean(x: np.ndarray) -> np.ndarray:  # over height and width only; 3.5 sigma reaches 5 pixels: 11x11
        return scipy.ndimage.gaussian_filter(x, sigma=(0, 0, 1.5, 1.5), truncate=3.5, mode="reflect")

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a, var_b = local_mean(a * a) - mu_a**2, local_mean(b * b) - mu_b**2
    covariance = local_mean(a * b) - mu_a * mu_b
    similarity = ((2 * mu_a * mu_b + c1) * (2 * covariance + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    pad = 5 if min(a.shape[2:]) > 10 else 0  # the window's half width; tiny images keep every pixel
    inside = similarity[:, :, pad : a.shape[2] - pad, pad : a.shape[3] - pad]
    return inside.reshape(len(a), -1).mean(axis=1)
